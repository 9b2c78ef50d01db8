"""``python -m modelsafe``: the command line."""

from modelsafe.cli import main

if __name__ == "__main__":
    main()
