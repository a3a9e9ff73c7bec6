"""Service presets: where a Google API's operations live and what their names look like.

Every API here maps cancel as ``POST /{version}/{+name}:cancel`` (the AIP-151 mapping used by
456 of 465 cancel methods in Google's discovery documents), so only the host, the version and the
accepted name shapes differ.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    endpoint: str
    api_version: str
    patterns: tuple[str, ...]
    #: the service lists ``locations/-`` itself (AIP-159); otherwise bulkcancel fans out.
    dash_ok: bool = False


_LOCATION_OPS = "projects/*/locations/*/operations/*"

PRESETS: dict[str, Preset] = {
    "clouddeploy": Preset("https://clouddeploy.googleapis.com", "v1", (_LOCATION_OPS,)),
    # Vertex AI: a regional host per location ({location} is filled from each name), and
    # operations nested under the resources they act on.
    "aiplatform": Preset(
        "https://{location}-aiplatform.googleapis.com",
        "v1",
        (
            _LOCATION_OPS,
            "projects/*/locations/*/*/*/operations/*",
            "projects/*/locations/*/*/*/*/*/operations/*",
        ),
    ),
    "batch": Preset("https://batch.googleapis.com", "v1", (_LOCATION_OPS,)),
    "redis": Preset("https://redis.googleapis.com", "v1", (_LOCATION_OPS,), dash_ok=True),
    "filestore": Preset("https://file.googleapis.com", "v1", (_LOCATION_OPS,), dash_ok=True),
    "dataproc": Preset(
        "https://dataproc.googleapis.com", "v1", ("projects/*/regions/*/operations/*",)
    ),
    "workstations": Preset("https://workstations.googleapis.com", "v1", (_LOCATION_OPS,)),
}
