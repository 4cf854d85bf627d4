"""``python -m mineru_cli`` runs the CLI (the spawn start method needs an importable main)."""

from mineru_cli.cli import main

if __name__ == "__main__":
    main()
