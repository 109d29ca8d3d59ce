"""The chunk pool (kernels/threads.py): results in chunk order, the calling thread working beside
the helpers, errors raised once every chunk has stopped, nested calls, and the allocator setting."""

import os
import subprocess
import sys
import threading
import time

import pytest

from cnnlab import kernels
from cnnlab.kernels import threads


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_results_come_back_in_chunk_order_from_every_thread(pool_of, workers):
    pool_of(workers)
    chunks = [(i, i + 1) for i in range(40)]
    who = {}

    def fn(n0, n1):
        time.sleep(0.001 * (n0 % 3))  # uneven chunks, so the threads interleave
        who[n0] = threading.get_ident()
        return n0 * 10 + n1

    assert threads.run_chunks(fn, chunks) == [i * 10 + i + 1 for i in range(40)]
    assert len(who) == 40
    assert threading.get_ident() in who.values()  # the calling thread took chunks too
    assert len(set(who.values())) >= 2


def test_an_error_in_a_chunk_is_raised_after_the_others_stop(pool_of):
    pool_of(2)
    running = []
    done = []

    def fn(n0, n1):
        running.append(n0)
        if n0 == 3:
            raise ValueError("chunk 3 failed")
        time.sleep(0.002)
        done.append(n0)
        return n0

    with pytest.raises(ValueError, match="chunk 3 failed"):
        threads.run_chunks(fn, [(i, i + 1) for i in range(50)])
    after = len(done)
    time.sleep(0.05)
    assert len(done) == after  # nothing still running once the error was raised
    assert len(running) < 50  # the chunks after the failure were not started


def test_a_chunk_may_split_its_own_work(pool_of):
    """A nested call does not wait for a helper that is busy with the outer call."""
    pool_of(2)

    def outer(n0, n1):
        return sum(threads.run_chunks(lambda a, b: a + b, [(n0, n1), (n1, n1 + 1)]))

    result = []
    t = threading.Thread(target=lambda: result.append(threads.run_chunks(outer, [(0, 1), (1, 2), (2, 3)])))
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "nested run_chunks deadlocked"
    assert result == [[1 + 3, 3 + 5, 5 + 7]]


def _configure_in_child(env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "CNNLAB_MALLOPT"}
    env.update(env_extra)
    code = "from cnnlab.kernels import threads; print(threads.configure_malloc())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_allocator_is_tuned_unless_the_user_chose():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _configure_in_child({}) == "True"
    assert _configure_in_child({"CNNLAB_MALLOPT": "0"}) == "False"
    assert _configure_in_child({"MALLOC_TRIM_THRESHOLD_": "131072"}) == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_process_that_runs_only_compiled_jobs_has_its_allocator_tuned_too():
    """A convolution whose passes are all compiled jobs (no run_chunks) still sets the allocator
    up on first use: without it every step faulted in its large buffers afresh (1,140 page faults
    a step, 2.7 -> 4.4 ms, for a 128->256 stride-2 layer whose gradients the caller kept)."""
    code = (
        "import numpy as np, cnnlab, cnnlab.functional as F\n"
        "from cnnlab.kernels import threads\n"
        "x = cnnlab.tensor(np.ones((4, 16, 8, 8), np.float32), requires_grad=True)\n"
        "w = cnnlab.tensor(np.ones((32, 16, 3, 3), np.float32), requires_grad=True)\n"
        "F.conv2d(x, w, padding=1).sum().backward()\n"
        "print(threads._blas_limits is not None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_inside_a_compiled_kernel_arrives_as_an_interrupt(pool_of, workers):
    """Ctrl-C while a compiled kernel runs on the main thread makes its return a SystemError
    ("returned a result with an exception set") chained to the KeyboardInterrupt: the caller,
    which handles interrupts, gets the KeyboardInterrupt."""
    pool_of(workers)

    def fn(n0, n1):
        if n0 == 1:
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt as e:
                raise SystemError("<dispatcher> returned a result with an exception set") from e
        return n0

    with pytest.raises(KeyboardInterrupt):
        threads.run_chunks(fn, [(0, 1), (1, 2), (2, 3)])

    def other(n0, n1):
        raise SystemError("something else")

    with pytest.raises(SystemError, match="something else"):
        threads.run_chunks(other, [(0, 1), (1, 2)])


@pytest.mark.skipif(not hasattr(time, "process_time"), reason="no process CPU clock")
def test_helpers_spin_briefly_then_sleep(pool_of, monkeypatch, fresh_pool):
    """After a call the helpers spin (policy.SPIN_SECONDS), then sleep: an idle process uses no CPU."""
    pool_of(2)
    fresh_pool(0.002)
    assert threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2), (2, 3)]) == [0, 1, 2]
    time.sleep(0.05)  # past the spin
    cpu = time.process_time()
    time.sleep(0.3)
    assert time.process_time() - cpu < 0.1  # asleep, not spinning through the 0.3 s


def test_no_spinning_when_told_or_oversubscribed(pool_of, monkeypatch, fresh_pool):
    pool_of(2)
    fresh_pool(0.0)
    threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])
    assert threads._the_pool.spin_turns == 0
    monkeypatch.setattr(kernels.policy, "SPIN_SECONDS", 0.002)
    assert not kernels.policy.spin_allowed(10_000)  # more threads than cores: a spinner would steal


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_gets_its_own_helpers(pool_of):
    pool_of(2)
    threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])  # the parent's pool exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's helper threads are not here
        try:
            names = set()

            def fn(a, b):
                time.sleep(0.002)
                names.add(threading.current_thread().name)
                return a

            ok = threads.run_chunks(fn, [(i, i + 1) for i in range(20)]) == list(range(20)) and len(names) >= 2
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"


@pytest.mark.skipif(not hasattr(time, "process_time"), reason="no process CPU clock")
def test_the_caller_sleeps_while_a_helper_finishes_a_long_chunk(pool_of, monkeypatch, fresh_pool):
    pool_of(2)
    fresh_pool(0.002)
    main = threading.current_thread()
    helped = []

    def fn(n0, n1):
        if threading.current_thread() is not main:
            helped.append(n0)
            time.sleep(0.3)  # the helper's chunk: long, and without CPU
        else:
            time.sleep(0.001)
        return n0

    threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])  # helpers awake
    cpu = time.process_time()
    assert threads.run_chunks(fn, [(i, i + 1) for i in range(40)]) == list(range(40))
    assert helped  # a helper did take a chunk, and the caller waited for it
    assert time.process_time() - cpu < 0.1  # asleep, not spinning through the 0.3 s


@pytest.mark.skipif(threads.current_cpu() < 0 or not hasattr(os, "sched_setaffinity"), reason="no CPU query")
def test_a_helper_on_the_callers_cpu_marks_the_job_shared():
    """A helper that joins on the CPU its caller runs on marks the job: the caller then does not
    spin while it waits, nor does that helper spin after it (both would only take the CPU from
    the other); a helper on another CPU leaves the job unmarked."""
    cpus = sorted(os.sched_getaffinity(0))

    def helped_on(cpu):
        job = threads._Job(lambda a, b: a, [(0, 1), (1, 2)])
        job.cpu = cpus[0]  # where the caller runs

        def helper():
            os.sched_setaffinity(0, {cpu})  # this thread only
            job.help()

        t = threading.Thread(target=helper)
        t.start()
        t.join()
        assert job.results == [0, 1]
        return job.shared

    assert helped_on(cpus[0])
    if len(cpus) > 1:
        assert not helped_on(cpus[1])


def test_a_spinning_helper_leaves_a_job_without_the_gil():
    """A helper that will spin for its next job stays counted in the job after its work
    (help returns True) and leaves it by jobs.serve, without the GIL; one that shares the caller's
    CPU, or whose caller already sleeps, leaves under the lock as before."""
    from cnnlab.kernels import jobs

    job = threads._Job(lambda a, b: a, [(0, 1), (1, 2)])
    job.cpu = -1
    assert job.help(defer=True) and job.active[0] == 1 and job.results == [0, 1]
    desc = threads.np.zeros(jobs.SLOTS, threads.np.int64)
    assert jobs.serve(desc.ctypes.data, 0, 1, job.active.ctypes.data) == 0  # one turn, nothing posted
    assert job.active[0] == 0
    for mark in ("shared", "sleeping"):
        job = threads._Job(lambda a, b: a, [(0, 1)])
        job.cpu = -1
        setattr(job, mark, True)
        assert not job.help(defer=True) and job.active[0] == 0


def test_callers_that_sleep_at_once_still_see_helpers_leave(pool_of, monkeypatch, fresh_pool):
    """The caller spins one turn, then sleeps: helpers that had already chosen to leave without
    the lock (so set no event) are seen by the caller looking again; every call returns, whole."""
    pool_of(2)
    fresh_pool(0.002)
    threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])
    monkeypatch.setattr(threads._the_pool, "wait_turns", 1)
    chunks = [(i, i + 1) for i in range(6)]
    for k in range(300):
        spin = (k % 7) * 1e-5
        start = time.perf_counter()

        def fn(n0, n1, spin=spin, start=start):
            while time.perf_counter() - start < spin * n0:
                pass
            return n0

        assert threads.run_chunks(fn, chunks) == list(range(6))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity calls")
def test_threads_are_bound_only_where_the_process_owns_as_many_cpus_as_workers(monkeypatch):
    """policy.pin_plan: the caller's CPUs and one CPU per helper where the process may use exactly
    workers CPUs; None where it may use more or fewer (other processes may share them), or where
    CNNLAB_PIN_THREADS=0 said no."""
    monkeypatch.setattr(kernels.policy.os, "sched_getaffinity", lambda pid: {4, 9, 2})
    assert kernels.policy.pin_plan(2) == (frozenset({2}), (4, 9))
    assert kernels.policy.pin_plan(1) is None and kernels.policy.pin_plan(3) is None
    assert kernels.policy.pin_plan(0) is None
    monkeypatch.setattr(kernels.policy, "PIN_THREADS", False)
    assert kernels.policy.pin_plan(2) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or threads.current_cpu() < 0, reason="needs two CPUs and affinity calls")
def test_a_bound_pool_keeps_its_helpers_apart_and_gives_the_caller_its_mask_back(pool_of, monkeypatch, fresh_pool):
    """With as many workers as CPUs, each helper runs on its own CPU and the caller, during a job,
    on the others; after the job (and after one whose chunk failed) the caller's mask is what it
    was, so threads it starts later are not bound. A caller its owner bound elsewhere stays so."""
    cpus = sorted(os.sched_getaffinity(0))
    pool_of(len(cpus))
    monkeypatch.setattr(kernels.policy, "PIN_THREADS", True)
    fresh_pool(0.002)
    before = os.sched_getaffinity(0)
    seen = {}

    def fn(n0, n1):
        time.sleep(0.002)  # long enough that every helper joins
        seen.setdefault(threading.get_ident(), set()).add(frozenset(os.sched_getaffinity(0)))
        return n0

    chunks = [(i, i + 1) for i in range(8 * len(cpus))]
    assert threads.run_chunks(fn, chunks) == list(range(len(chunks)))
    pool = threads._the_pool
    assert pool.home == frozenset(cpus[:1])
    assert seen[threading.get_ident()] == {pool.home}
    for t, cpu in zip(pool.threads, cpus[1:]):
        assert os.sched_getaffinity(t.native_id) == {cpu}
        assert seen.get(t.ident, {frozenset({cpu})}) == {frozenset({cpu})}
    assert os.sched_getaffinity(0) == before

    def fails(n0, n1):
        raise ValueError("chunk")

    with pytest.raises(ValueError, match="chunk"):
        threads.run_chunks(fails, chunks)
    assert os.sched_getaffinity(0) == before

    os.sched_setaffinity(0, {cpus[-1]})  # bound by its owner away from the pool's caller CPUs
    try:
        threads.run_chunks(fn, chunks)
        assert seen[threading.get_ident()] >= {frozenset({cpus[-1]})}
        assert os.sched_getaffinity(0) == {cpus[-1]}
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
                    or threads.current_cpu() < 0, reason="needs two CPUs and affinity calls")
def test_an_interrupt_as_the_caller_is_bound_still_gives_its_mask_back(pool_of, monkeypatch, fresh_pool):
    """Ctrl-C that arrives as the binding's system call returns (before the job starts) still
    gives the caller its mask back."""
    cpus = sorted(os.sched_getaffinity(0))
    pool_of(len(cpus))
    monkeypatch.setattr(kernels.policy, "PIN_THREADS", True)
    fresh_pool(0.002)
    threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])  # the pool, bound
    before = os.sched_getaffinity(0)
    real = os.sched_setaffinity
    calls = []

    def interrupted(pid, mask):
        real(pid, mask)
        calls.append(set(mask))
        if len(calls) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(threads.os, "sched_setaffinity", interrupted)
    with pytest.raises(KeyboardInterrupt):
        threads.run_chunks(lambda a, b: a, [(0, 1), (1, 2)])
    assert calls[0] == set(threads._the_pool.home)
    assert os.sched_getaffinity(0) == before
