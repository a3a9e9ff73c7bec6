"""``python -m bulkcancel``: the same command line as the ``bulkcancel`` script."""

from bulkcancel.cli import main

if __name__ == "__main__":
    main()
