"""RunPod serverless entry point: `python handler.py` on RunPod, or locally with the SDK's test mode:
`LTX2_MODEL=tiny python handler.py --test_input '{"input": {"prompt": "a cat"}}'` or with test_input.json.
"""

from ltx2.serving.worker import main

if __name__ == "__main__":
    main()
