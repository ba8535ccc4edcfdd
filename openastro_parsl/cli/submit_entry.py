"""`python -m openastro_parsl.cli.submit_entry` == `openastro-submit` (for environments without the script)."""

from .submit import main

if __name__ == "__main__":
    main()
