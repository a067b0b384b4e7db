import pytest
from servers import start_server, stop_server


@pytest.fixture(scope="session")
def model():
    from ltx2 import load_model

    return load_model("tiny", device="cpu")


@pytest.fixture(scope="session")
def client(model, tmp_path_factory):
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    settings = Settings(output_dir=str(tmp_path_factory.mktemp("output")))
    with TestClient(create_app(settings, model=model)) as test_client:
        yield test_client


@pytest.fixture
def make_client(model, tmp_path):
    """In-process apps on the session's model, each with its own settings, all sharing one output folder
    (a second client is the same server restarted); each is closed after the test."""
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    clients = []

    def make(**settings):
        client = TestClient(create_app(Settings(output_dir=str(tmp_path / "out"), **settings), model=model))
        clients.append(client.__enter__())
        return clients[-1]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    """A real `python server.py` process on loopback, as a user starts it."""
    out = tmp_path_factory.mktemp("live")
    proc, base = start_server(out / "output", out / "server.log")
    yield base
    stop_server(proc)
