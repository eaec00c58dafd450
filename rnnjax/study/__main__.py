"""``python -m rnnjax.study``: the vanishing-gradient study from the command line."""

from rnnjax._src.study import main

if __name__ == "__main__":
    main()
