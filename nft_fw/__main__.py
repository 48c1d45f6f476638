import sys

from nft_fw.cli import main

sys.exit(main())
