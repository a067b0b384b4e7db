"""HTTP server entry point: `python server.py --model tiny --host 127.0.0.1 --port 8000`.

Every flag also reads an environment variable (LTX2_MODEL, LTX2_HOST, LTX2_PORT, LTX2_DEVICE).
"""

from ltx2.cli import serve
from ltx2.settings import parse_settings

if __name__ == "__main__":
    serve(parse_settings(prog="server.py"))
