"""mineru-cli: batch conversion of documents to Markdown and JSON with MinerU 4.

Data flows one way: discover -> plan -> run (executor, engine) -> store -> report.
Heavy libraries (mineru, s3fs, ray, torch) are imported lazily inside functions so that
``mineru-cli --help`` stays fast.

Must not: import anything (``mineru-cli --help`` imports this package).
"""

__version__ = "0.1.0"
