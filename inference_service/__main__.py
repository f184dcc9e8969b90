"""`python -m inference_service`, the same as the console script pyproject.toml names for it."""

from inference_service.server import main

if __name__ == "__main__":
    main()
