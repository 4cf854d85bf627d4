"""``python -m mineru_cli`` runs the CLI (the spawn start method needs an importable main).

Must not: hold any code but the call (the spawn start method imports it in every worker).
"""

from mineru_cli.cli import main

if __name__ == "__main__":
    main()
