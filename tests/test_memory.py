"""Process memory settings (engine/memory.py): each runs in a child process, since they are process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _child(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_tune_process_sets_the_allocator_and_arrow_pool():
    out = _child("""
        import pyarrow as pa
        from engine.core.memory import tune_process, release_free_memory
        import gc
        applied = tune_process()
        assert gc.get_threshold()[0] == 20000 and gc.get_freeze_count() > 0
        print(pa.default_memory_pool().backend_name, release_free_memory(), "|".join(applied), sep=";")
    """)
    backend, trimmed, applied = out.split(";")
    assert backend == "system" and "arrow system pool (pyarrow calls only)" in applied
    assert "malloc arenas <= 2" in applied and "mmap threshold 256 KiB" in applied
    assert trimmed == "True"


def test_tune_process_before_pyarrow_makes_arrows_own_default_pool_malloc():
    # pa.set_memory_pool only changes pyarrow's default: Arrow's JSON reader and Parquet writer kept
    # allocating from mimalloc (~55 MB retained over a benchmark run) until the pool came from the
    # environment
    out = _child("""
        import io, os
        os.environ.pop("ARROW_DEFAULT_MEMORY_POOL", None)
        from engine.core.memory import tune_process
        applied = tune_process()
        import pyarrow as pa, pyarrow.json as pj, pyarrow.parquet as pq
        table = pj.read_json(io.BytesIO(b'{"a": "x"}\\n' * 20000))
        pq.write_table(table, io.BytesIO())
        print(pa.default_memory_pool().backend_name, pa.mimalloc_memory_pool().max_memory(),
              pa.system_memory_pool().max_memory() > 0, "arrow system pool" in applied, sep=";")
    """)
    assert out == "system;0;True;True"


def test_tune_process_keeps_a_users_arrow_pool_choice():
    out = _child("""
        import os
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "jemalloc"
        from engine.core.memory import tune_process
        print("|".join(tune_process()), os.environ["ARROW_DEFAULT_MEMORY_POOL"], sep=";")
    """)
    applied, env = out.split(";")
    assert "arrow jemalloc pool" in applied and env == "jemalloc"


def test_refuse_unused_imports_keeps_pyarrow_working_without_pandas():
    out = _child("""
        import sys
        from engine.core.memory import refuse_unused_imports
        assert refuse_unused_imports()
        import numpy as np, pyarrow as pa
        arr = pa.array(np.arange(5))  # pyarrow's pandas check used to import pandas here
        import io, pyarrow.fs, pyarrow.parquet as pq  # local files still work without the remote filesystems
        buf = io.BytesIO(); pq.write_table(pa.table({"a": arr}), buf)
        # ParquetFile as the engine reads (read_table's dataset scanner threads can abort Python's exit:
        # apache/arrow#34314)
        with pq.ParquetFile(io.BytesIO(buf.getvalue())) as f:
            assert f.read().num_rows == 5 and "pyarrow._s3fs" not in sys.modules
        assert pyarrow.fs.LocalFileSystem() is not None
        try:
            import pandas
            print("imported")
        except ModuleNotFoundError as e:
            print("refused", arr.to_pylist() == [0, 1, 2, 3, 4], "pandas" in sys.modules)
    """)
    assert out == "refused True False"


def test_refuse_unused_imports_does_nothing_once_pandas_is_loaded():
    out = _child("""
        import pandas
        from engine.core.memory import refuse_unused_imports
        print(refuse_unused_imports())
    """)
    assert out == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux")
def test_lower_thread_priority_only_affects_the_calling_thread():
    out = _child("""
        import os, threading
        from engine.core.memory import lower_thread_priority
        seen = {}
        def worker():
            seen["ok"] = lower_thread_priority()
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        t = threading.Thread(target=worker); t.start(); t.join()
        main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        print(seen["ok"], seen["nice"] - main)
    """)
    assert out == "True 10"


def test_a_clair_run_process_never_imports_pandas(tmp_path):
    """The real `clair run` process (not an in-process call) refuses the pandas import for local inputs,
    and pyarrow's remote filesystems."""
    out = _child(f"""
        import sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r})
        from pathlib import Path
        from helpers import make_input, write_config
        from engine.tools.mockserver_proc import MockProcess
        import subprocess
        tmp = Path({str(tmp_path)!r})
        inp = make_input(tmp, 300)
        probe = tmp / "probe.py"
        probe.write_text(
            "import sys, atexit\\n"
            "flag = sys.argv[1]\\n"
            "atexit.register(lambda: open(flag, 'w').write(str('pandas' in sys.modules or 'pyarrow._s3fs' in sys.modules)))\\n"
            "sys.argv = ['clair'] + sys.argv[2:]\\n"
            "from engine.cli import main\\n"
            "raise SystemExit(main())\\n"
        )
        with MockProcess(["--latency-ms", "1"]) as m:
            cfg = write_config(tmp, m.url, inp)
            rc = subprocess.run([sys.executable, str(probe), str(tmp / "flag"), "run", str(cfg)]).returncode
        print(rc, (tmp / "flag").read_text())
    """)
    assert out.splitlines()[-1] == "0 False"
