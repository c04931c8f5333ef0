"""``python -m kzjobs``: the same CLI as the ``kzjobs`` script (used by the local launcher)."""

from kzjobs.cli import main

if __name__ == "__main__":
    main()
