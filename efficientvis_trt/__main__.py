"""`python -m efficientvis_trt` == the `evis` console script."""

from efficientvis_trt.cli import main

raise SystemExit(main())
