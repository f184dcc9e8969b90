"""`python -m recorder_service`, the same as the console script pyproject.toml names for it."""

from recorder_service.service import main

if __name__ == "__main__":
    main()
