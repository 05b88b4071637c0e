"""``python -m engine.tools.mockserver``: run the mock server (the same as ``clair mock-server``)."""

from engine.tools.mockserver.cli import main

raise SystemExit(main())
