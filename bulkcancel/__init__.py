"""bulkcancel: cancel Google Cloud long-running operations in bulk, and prove what happened."""

from bulkcancel._models import OperationResult, Outcome, Report

__all__ = ["OperationResult", "Outcome", "Report"]
