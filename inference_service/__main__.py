"""`python -m inference_service`, the same as the console script pyproject.toml names for it."""

from inference_service.workers import main

# Guarded: a spawned worker imports this module again (as __mp_main__) and must not run it.
if __name__ == "__main__":
    main()
