"""`python -m chalicelib.admin …`"""

import sys

from chalicelib.admin import main

sys.exit(main())
