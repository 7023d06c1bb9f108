import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import reference.py and gguf_writer.py


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2 in this process, as the server tests compare the server's answers with it."""
    from pyllm import Model
    from pyllm.fetch import default_model
    from served import CTX

    with Model(default_model(quiet=True), n_ctx=CTX, n_threads=1) as m:
        yield m


@pytest.fixture(scope="session")
def smollm2_server(smollm2):
    """One `pyllm serve` on SmolLM2 shared by the server test modules; it must exit cleanly."""
    from served import Served

    srv = Served("--parallel", "4")
    yield srv
    code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err[-3000:]
