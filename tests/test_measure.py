"""Measurement: the runtime registry, the settings type, the stopping rule on recorded samples, and every
device result checked before it is written.

The stopping-rule tests replay per-run latencies recorded on this machine (tests/fixtures/runner_samples.json
says how) through the runner's own functions; the profile tests measure for real on the local CPU.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwnas.agents import runner, runtimes
from hwnas.agents.errors import DeviceError, ProfileError
from hwnas.agents.measure_settings import MeasureSettings
from hwnas.agents.profiles import RUNTIMES, load_profile, parse_profile
from hwnas.profiler.diff import COMPARABILITY_FIELDS as DIFF_FIELDS
from hwnas.profiler.lut import LUT, RESUME_FIELDS
from hwnas.profiler.measure import check_results
from hwnas.profiler.noise import fitted_window_s, spread_between_windows
from hwnas.profiler.profile import ProfileRequest, profile_device
from hwnas.profiler.workloads import RUNTIME_FORMAT

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = json.loads((FIXTURES / "runner_samples.json").read_text())


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "workload-cache"))


def _profile_yaml(tmp_path: Path, measure: str, name: str = "m1") -> Path:
    """A local profile with its own workdir (so its device lock is not the shared local one)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\ntransport:\n  local: {{}}\nruntime: onnxruntime\nthreads: 1\n"
        f"workdir: {tmp_path / 'wd'}\nmeasure: {measure}\n"
    )
    return path


def hwnas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwnas", *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


# ------------------------------------------------------------------------------------------- registry


def test_every_runtime_has_every_field() -> None:
    assert RUNTIMES == runtimes.NAMES and set(RUNTIME_FORMAT) == set(runtimes.NAMES)
    for name, rt in runtimes.REGISTRY.items():
        assert rt.name == name
        assert rt.driver in ("python", "binary")
        assert rt.model_format in ("onnx", "tflite") and RUNTIME_FORMAT[name] == rt.model_format
        assert rt.statistic in rt.stat_keys and all(k.endswith("_ms") for k in rt.stat_keys)
        assert rt.samples == rt.python  # only the Python runner returns per-run samples
        assert bool(rt.modules) == rt.python
        assert rt.comparability and set(rt.comparability) <= set(runtimes.COMPARABILITY_FIELDS)
    assert set(runtimes.PYTHON_RUNTIMES) | set(runtimes.BINARY_RUNTIMES) == set(runtimes.NAMES)


def test_resume_and_diff_compare_the_same_fields() -> None:
    assert RESUME_FIELDS == DIFF_FIELDS == runtimes.COMPARABILITY_FIELDS


# ------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("measure", "message"),
    [
        ({"runs": 0}, "measure.runs must be an integer >= 1, got 0"),
        ({"warmup": -1}, "measure.warmup must be an integer >= 0, got -1"),
        ({"precision": 0}, "measure.precision must be a number > 0, got 0"),
        ({"precision": -0.1}, "measure.precision must be a number > 0, got -0.1"),
        ({"min_seconds": -2}, "measure.min_seconds must be a number >= 0, got -2"),
        ({"max_entry_s": 0}, "measure.max_entry_s must be a number > 0, got 0"),
        ({"rounds": "3"}, "measure.rounds must be an integer >= 1, got '3'"),
        ({"runz": 3}, "unknown field measure.'runz' (did you mean 'runs'?)"),
    ],
)
def test_bad_measure_values_name_the_field(measure: dict, message: str) -> None:
    with pytest.raises(ProfileError, match=".*") as info:
        parse_profile({"name": "x", "measure": measure}, source="device_profiles/x.yaml")
    assert str(info.value).startswith("device_profiles/x.yaml: ") and message in str(info.value)
    assert info.value.exit_code == 2


def test_bad_measure_value_is_exit_2_on_the_command_line(tmp_path: Path) -> None:
    path = _profile_yaml(tmp_path, "{runs: 0}")
    proc = hwnas("profile", str(path), "--space", "compact", "--json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{path}: measure.runs must be an integer >= 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    other = str(_profile_yaml(tmp_path, "{}", "m2"))
    for flag, value, message in (("--precision", "0", "--precision must be a number > 0, got 0"),
                                 ("--max-wait", "-1", "--max-wait must be a number >= 0, got -1"),
                                 ("--min-seconds", "-1", "--min-seconds must be a number >= 0, got -1"),
                                 ("--max-entry-s", "0", "--max-entry-s must be a number > 0, got 0"),
                                 ("--processes", "0", "--processes must be an integer >= 1, got 0")):
        bad = hwnas("profile", other, "--space", "compact", flag, value, "--json")
        assert bad.returncode == 2 and f"command line: {message}" in bad.stderr, bad.stderr  # named as typed


def test_flags_override_the_profile_and_defaults_live_in_one_place() -> None:
    profile = load_profile("local")
    assert profile.measure == MeasureSettings()  # local.yaml states the defaults; nothing overrides them
    changed = profile.measure.replace(runs=7, precision=None, max_wait_s=0)
    assert (changed.runs, changed.precision, changed.max_wait_s, changed.warmup) == (7, 0.02, 0.0, 10)


def test_the_profiles_measure_settings_reach_the_runner(tmp_path: Path) -> None:
    """runs: 80 in one round with a precision any 80 runs meet: every row holds exactly 80 runs, and the
    settings are in the LUT's metadata. Before, a profile's runs were ignored (10 per round, 3 rounds)."""
    path = _profile_yaml(tmp_path, "{warmup: 1, runs: 80, rounds: 1, min_seconds: 0, precision: 100, max_wait_s: 0}")
    out = tmp_path / "lut.csv"
    res = profile_device(load_profile(str(path)), ProfileRequest(space="compact", resolutions=(32,), out=out,
                                                                 calibration_subnets=3))
    lut = LUT.load(out)
    assert res["measured"] == len(lut) and (lut.rows["runs"] == 80).all()
    assert (lut.rows["converged"] == "true").all() and np.isfinite(lut.rows["ci"].astype(float)).all()
    # every row was measured in the default two runner processes: how far they disagreed is in the row
    assert (lut.rows["process_spread"].astype(float) >= 0).all()
    meta = lut.metadata["measurement"]
    assert (meta["runs"], meta["rounds"], meta["precision"], meta["warmup"]) == (80, 1, 100.0, 1)
    assert lut.metadata["noise_floor"] is None or lut.metadata["noise_floor"] >= 0
    # a flag goes on top of the profile
    out2 = tmp_path / "lut2.csv"
    proc = hwnas("profile", str(path), "--space", "compact", "--resolutions", "32", "--out", str(out2),
                 "--runs", "90", "--calibration-subnets", "2", "--processes", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (LUT.load(out2).rows["runs"] == 90).all()
    assert meta["processes"] == 2 and LUT.load(out2).metadata["measurement"]["processes"] == 1


# ------------------------------------------------------------------------------- the stopping rule


def _replay(samples: list[float], statistic: str, precision: float, *, per_round: int = 10, rounds: int = 3,
            max_entry_s: float = math.inf) -> tuple[int, float, bool]:
    """Feed recorded samples to the runner's stopping rule round by round, as the runner does: (runs, ci,
    converged) when it stops (or when the recording runs out: converged False, runs = len)."""
    for r in range(1, len(samples) // per_round + 1):
        got = samples[: r * per_round]
        if r < rounds:
            continue
        done, ci, converged = runner.sampling_done(got, statistic, precision, sum(got) / 1000.0, max_entry_s)
        if done:
            return len(got), ci, converged
    return len(samples), runner.relative_ci(samples, statistic), False


def test_a_steady_entry_converges_early_and_its_interval_holds_the_long_run_value() -> None:
    samples = RECORDED["entry_a"]
    n, ci, converged = _replay(samples, "median_ms", 0.02)
    assert converged and ci <= 0.02 and n < len(samples) // 4
    # the interval at the stop covers the median of the whole recording
    lo, hi = runner.quantile_interval(sorted(samples[:n]), 0.5)
    assert lo <= float(np.median(samples)) <= hi


def test_samples_that_never_converge_stop_at_the_time_cap_unconverged() -> None:
    # 13% of the runs were preempted by other processes (tens of ms instead of 0.4): the mean's interval
    # never narrows to 2%; the cap stops it and the result says so
    samples = RECORDED["reference_busy"]
    cap = 0.5 * sum(samples) / 1000.0
    n, ci, converged = _replay(samples, "mean_ms", 0.02, max_entry_s=cap)
    assert not converged and ci > 0.02
    assert sum(samples[:n]) / 1000.0 >= cap and n < len(samples)


def test_bimodal_samples_the_median_cannot_pin_but_a_low_quantile_can() -> None:
    # two real recordings of models 50% apart, interleaved: the median sits in the gap between the modes
    a, b = RECORDED["entry_a"][:1000], RECORDED["entry_b"][:1000]
    mixed = [x for pair in zip(a, b, strict=True) for x in pair]
    n_med, ci_med, conv_med = _replay(mixed, "median_ms", 0.02)
    n_p10, ci_p10, conv_p10 = _replay(mixed, "p10_ms", 0.02)
    assert not conv_med and ci_med > 0.05 and n_med == len(mixed)
    assert conv_p10 and ci_p10 <= 0.02 and n_p10 < len(mixed)


def test_a_quantile_needs_enough_samples_for_an_interval() -> None:
    assert runner.relative_ci([1.0] * 20, "p10_ms") == math.inf  # rank below 1 at n = 20
    assert runner.relative_ci([1.0] * 60, "p10_ms") == 0.0
    assert runner.quantile_interval(list(range(1, 51)), 0.5) == (18, 33)  # the binomial table's ranks


def test_noise_floor_is_the_spread_of_the_statistic_between_windows() -> None:
    steady = [1.0] * 2000  # 2 s in 1 ms runs: 4 windows of 0.5 s (the default), all alike
    assert spread_between_windows(steady, "median_ms")[0] == 0.0
    slow_half = [1.0] * 1000 + [1.5] * 667  # 4 windows of 0.25 s at 1 ms, then the machine slowed by 50%: 3 more
    spread, values = spread_between_windows(slow_half, "median_ms", 0.25)
    assert values == [1.0] * 4 + [1.5] * 3 and spread == pytest.approx(0.5)  # (max - min) / median
    assert spread_between_windows([1.0] * 3, "median_ms") == (None, [])


def test_noise_windows_shrink_to_fit_the_timed_work() -> None:
    # 2 s of wall clock but only 0.8 s of timed work (per-run overhead, a busy machine): with 0.5 s windows
    # one window closes and there is no noise floor; fitted, four windows of 0.2 s close.
    short = [0.4] * 1000 + [0.4] * 1000
    assert spread_between_windows(short, "median_ms")[0] is None
    window = fitted_window_s(short)
    assert window == pytest.approx(0.999 * 0.8 / 4)
    assert spread_between_windows(short, "median_ms", window) == (0.0, [0.4] * 4)
    slowed = [0.4] * 1000 + [0.5] * 1000  # the second half 25% slower: the spread sees it
    spread, values = spread_between_windows(slowed, "median_ms", fitted_window_s(slowed))
    assert len(values) == 4 and values[0] == 0.4 and values[-1] == 0.5 and spread > 0.2
    assert fitted_window_s([1.0] * 4000) == 0.5  # 4 s of timed work: the default windows fit as they are


class _ScriptedDevice:
    """A stand-in for the gate's device. The gate's logic is under test, and the real local device cannot be
    made slow in chosen windows and quiet in others on cue (the profile tests measure the real one): each ``measure`` call
    returns the reference's per-run samples, 1 ms runs scaled by the next per-window speeds of ``script``, as
    many windows as the gate asked for (``min_seconds`` / 0.5 s); ``clock`` advances by the time measured."""

    def __init__(self, script: list[float], per_run: bool = True) -> None:
        self.script = list(script)
        self.per_run = per_run  # False: a runtime that prints no per-run samples (a benchmark program)
        self.calls: list[float] = []
        self.now = 0.0
        self.profile = type("P", (), {"name": "scripted"})()

    def clock(self) -> float:
        return self.now

    def measure(self, models: list, **job: object) -> list[dict]:
        span = float(job["min_seconds"])  # type: ignore[arg-type]
        self.calls.append(span)
        samples: list[float] = []
        for _ in range(round(span / 0.5)):
            speed = self.script.pop(0) if self.script else 1.0
            samples += [speed] * math.ceil(500 / speed)  # 0.5 s of timed work at this speed
        self.now += span + 0.4  # the runner's start, loading and warm-up
        return [{"type": "result", "id": models[0].id, "runs": len(samples), **({"samples_ms": samples} if self.per_run else {})}]


def _gate(script: list[float], per_run: bool = True, **settings: object) -> tuple[dict, _ScriptedDevice]:
    from hwnas.profiler.noise import noise_gate
    from hwnas.profiler.workloads import Workload

    dev = _ScriptedDevice(script, per_run)
    ref = Workload(id="reference", path=Path("ref.onnx"), kind="reference")
    got = noise_gate(dev, ref, runtime="onnxruntime", threads=1,  # type: ignore[arg-type]
                     settings=MeasureSettings(**settings), clock=dev.clock)  # type: ignore[arg-type]
    return got, dev


def test_the_noise_gate_measures_on_and_judges_the_latest_windows() -> None:
    got, dev = _gate([1.0, 1.0, 1.01, 1.0])  # quiet at once: one measurement of 4 windows
    assert dev.calls == [2.0] and got["quiet"] and got["noise_floor"] == pytest.approx(0.01)
    # a slow spell in the first two windows: two more windows, and the latest four are quiet
    got, dev = _gate([1.3, 1.2, 1.0, 1.0, 1.0, 1.01])
    assert dev.calls == [2.0, 1.0] and got["quiet"] and got["windows_ms"] == [1.0, 1.0, 1.0, 1.01]
    assert got["noise_floor"] == pytest.approx(0.01) and got["waited_s"] == pytest.approx(3.8)
    # never quiet: it goes on after max_wait_s, saying so, with the latest windows' spread
    got, dev = _gate([1.0, 1.3] * 20, max_wait_s=5.0)
    assert not got["quiet"] and got["noise_floor"] == pytest.approx(0.3 / 1.15) and got["waited_s"] >= 5.0
    assert dev.calls == [2.0, 1.0, 1.0] and len(got["windows_ms"]) == 4
    # a runtime that prints no per-run samples has no noise floor and nothing to wait for
    none, dev = _gate([1.0, 1.3] * 20, per_run=False)
    assert dev.calls == [2.0] and none["noise_floor"] is None and none["quiet"] and none["windows_ms"] == []


# ------------------------------------------------------------------------ device results are checked


def _result(mid: str, **changes: object) -> dict:
    res = {"type": "result", "id": mid, "runs": 10, "median_ms": 1.0, "p10_ms": 0.9, "p90_ms": 1.2,
           "mean_ms": 1.0, "std_ms": 0.1, "min_ms": 0.8, "tmean_ms": 1.0, "samples_ms": [1.0] * 10}
    res.update(changes)
    return res


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        (_result("m1", median_ms=float("nan")), "model m1: median_ms is nan"),
        (_result("m1", p10_ms=-0.5), "model m1: p10_ms is -0.5"),
        (_result("x9"), "unknown model id 'x9'"),
        (_result("m1", runs=0), "model m1: runs is 0"),
        ({k: v for k, v in _result("m1").items() if k != "std_ms"}, "model m1: the result lacks 'std_ms'"),
        (_result("m1", samples_ms=[1.0, float("inf")]), "model m1: a per-run sample is inf"),
    ],
)
def test_a_bad_result_is_a_device_error_naming_device_and_model(bad: dict, says: str) -> None:
    with pytest.raises(DeviceError) as info:
        check_results([_result("ref"), bad], known=["ref", "m1"], runtime="onnxruntime", device="board7")
    assert says in str(info.value) and "board7" in str(info.value)
    assert info.value.exit_code == 1


def test_benchmark_programs_need_only_their_statistic() -> None:
    ok = {"type": "result", "id": "m1", "runs": 50, "mean_ms": 2.0, "std_ms": None, "min_ms": 1.5, "max_ms": 9.0}
    check_results([ok], known=["m1"], runtime="onnxruntime-perf-test", device="phone")


WRAPPER = '''
import json, os, subprocess, sys
BAD, COUNTER = int(os.environ["A1_BAD_AFTER"]), os.environ["A1_COUNTER"]
proc = subprocess.Popen([sys.executable, *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
for line in proc.stdout:
    msg = json.loads(line) if line.startswith("{") else None
    if msg and msg.get("type") == "result":
        seen = int(open(COUNTER).read() or 0) + 1 if os.path.exists(COUNTER) else 1
        open(COUNTER, "w").write(str(seen))
        if seen > BAD:
            msg["median_ms"] = float("nan")
            line = json.dumps(msg) + "\\n"
    sys.stdout.write(line)
    sys.stdout.flush()
sys.exit(proc.wait())
'''


def test_a_device_returning_nan_stops_the_profile_and_keeps_the_rows_before(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The real runner, wrapped by a script that turns every result after the first batch's (and a few more)
    into NaN (what a broken
    runtime on a device sends; the wrapper stands in for such a device): the profile stops with exit 1 naming device and model, the first batch's
    rows stay in the file, and --resume (with the real runner again) completes the table."""
    from hwnas.agents import device as device_mod

    wrapper = tmp_path / "wrapped_runner.py"
    wrapper.write_text(WRAPPER)
    path = _profile_yaml(tmp_path, "{warmup: 1, runs: 60, rounds: 1, min_seconds: 0, precision: 100, max_wait_s: 0}")
    profile = load_profile(str(path))
    out = tmp_path / "lut.csv"
    request = ProfileRequest(space="compact", resolutions=(32,), out=out, calibration_subnets=3)

    orig_python_argv = device_mod.Device.python_argv

    def wrapped_argv(self: device_mod.Device) -> list[str]:
        return [*orig_python_argv(self), str(wrapper)] if self._wrap else orig_python_argv(self)

    monkeypatch.setattr(device_mod.Device, "_wrap", True, raising=False)
    monkeypatch.setattr(device_mod.Device, "python_argv", wrapped_argv)
    # results over all runner processes (noise check, batches): the first batch (and its reference) stays whole
    plan = MeasureSettings()  # each batch in plan.processes runner processes (the entries again in the later ones)
    monkeypatch.setenv("A1_BAD_AFTER", str(plan.processes * (plan.batch_size + 1) + 10))
    monkeypatch.setenv("A1_COUNTER", str(tmp_path / "results-seen"))
    with pytest.raises(DeviceError) as info:
        profile_device(profile, request)
    assert "m1" in str(info.value) and "model " in str(info.value) and "median_ms is nan" in str(info.value)
    kept = LUT.load(out)
    assert 0 < len(kept) < 79 and np.isfinite(kept.rows["median_ms"]).all()
    monkeypatch.setattr(device_mod.Device, "_wrap", False, raising=False)
    res = profile_device(profile, ProfileRequest(space="compact", resolutions=(32,), out=out, calibration_subnets=3,
                                                 resume=True))
    assert res["resumed"] == len(kept) and res["entries"] == 79


def test_kept_samples_are_every_run_up_to_the_cap_then_an_even_subsample() -> None:
    """A microsecond model timed for 0.2 s runs ~200,000 times: the result line (and the LUT's sidecar) keeps
    KEPT_SAMPLES of them, spread over the whole run in order, first and last included."""
    few = [float(i) for i in range(runner.KEPT_SAMPLES)]
    assert runner.kept_samples(few) == few
    many = [float(i) for i in range(200_003)]
    kept = runner.kept_samples(many)
    assert len(kept) == runner.KEPT_SAMPLES and kept[0] == 0.0 and kept[-1] == 200_002.0
    gaps = np.diff(kept)
    assert gaps.min() >= 100 and gaps.max() <= 101  # evenly spaced: 200,002 / 1,999 = 100.05


class _ProcessesDevice:
    """A stand-in for a device whose runner processes differ. Each ``measure`` call (one runner process) scales
    the models' times by the next mapping of ``speeds``. Stands in for what the real local device does at random,
    not on cue (one process in 6-12 ran one model 30-40% slow while its other models were not; BENCHMARKS.md)."""

    def __init__(self, speeds: list[dict[str, float]]) -> None:
        self.speeds = list(speeds)
        self.orders: list[list[str]] = []
        self.profile = type("P", (), {"name": "scripted"})()

    def stage(self, models: list, **job: object) -> None:
        pass

    def measure(self, models: list, **job: object) -> list[dict]:
        self.orders.append([m.id for m in models])
        speed = self.speeds.pop(0)
        return [_result(m.id, p10_ms=0.9 * speed.get(m.id, 1.0), median_ms=1.0 * speed.get(m.id, 1.0)) for m in models]


def test_each_model_keeps_its_fastest_process() -> None:
    from hwnas.profiler.measure import measure_batches
    from hwnas.profiler.workloads import Workload

    ref = Workload(id="reference", path=Path("ref.onnx"), kind="reference")
    work = [Workload(id=i, path=Path(f"{i}.onnx"), kind="entry") for i in ("a", "b")]
    work.append(Workload(id="net", path=Path("net.onnx"), kind="subnet"))  # a whole subnet: measured once
    # process 1 runs a 40% slow, and one of its reference's three sessions 30% slow (the median ignores it);
    # process 2 runs everything 10% slow (its reference's sessions too) and b 30% more
    slow_ref = {"reference": 1.1, "reference#2": 1.1, "reference#3": 1.1}
    dev = _ProcessesDevice([{"a": 1.4, "reference#2": 1.3}, {**slow_ref, "a": 1.1, "b": 1.1 * 1.3}])
    seen: dict[str, tuple[dict, float]] = {}
    plan = MeasureSettings(processes=2, reference_sessions=3)
    refs = measure_batches(dev, work, reference=ref, plan=plan, runtime="onnxruntime",  # type: ignore[arg-type]
                           threads=1, on_result=lambda w, res, r: seen.__setitem__(w.id, (res, r)))
    # the reference's sessions spread over each job; the entries again in the second, reversed
    assert dev.orders == [["reference", "a", "reference#2", "b", "reference#3", "net"],
                          ["reference", "reference#2", "b", "reference#3", "a"]]
    assert refs == pytest.approx([0.9, 0.99])
    (a, ref_a), (b, ref_b) = seen["a"], seen["b"]
    assert ref_a == pytest.approx(0.99) and a["p10_ms"] / ref_a == pytest.approx(1.0)  # a from process 2
    assert ref_b == pytest.approx(0.9) and b["p10_ms"] / ref_b == pytest.approx(1.0)  # b from process 1
    assert a["process_spread"] == pytest.approx(0.4) and b["process_spread"] == pytest.approx(0.3)
    assert seen["net"][1] == pytest.approx(0.9) and "process_spread" not in seen["net"][0]
    # one process: one runner job per batch, nothing to choose
    dev = _ProcessesDevice([{"a": 1.4}])
    measure_batches(dev, work, reference=ref, plan=MeasureSettings(processes=1), runtime="onnxruntime",  # type: ignore[arg-type]
                    threads=1, on_result=lambda w, res, r: seen.__setitem__(w.id, (res, r)))
    assert len(dev.orders) == 1 and "process_spread" not in seen["a"][0]
    with pytest.raises(ProfileError, match="processes must be an integer >= 1, got 0"):
        MeasureSettings().replace(processes=0)
    # one reference session (the default): that session alone is the reference
    dev = _ProcessesDevice([{"reference": 1.2}])
    refs = measure_batches(dev, work, reference=ref, plan=MeasureSettings(processes=1, reference_sessions=1),  # type: ignore[arg-type]
                           runtime="onnxruntime", threads=1, on_result=lambda w, res, r: None)
    assert dev.orders == [["reference", "a", "b", "net"]] and refs == pytest.approx([0.9 * 1.2])
    with pytest.raises(ProfileError, match="--reference-sessions must be an integer >= 1, got 0"):
        MeasureSettings().replace(reference_sessions=0)


# ------------------------------------------------------------------- min_seconds: the span of a model's runs


def _matmul_onnx(path: Path, n: int) -> Path:
    """A real ONNX model (one MatMul of an n x n input by a constant), for the runner to time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((n, n), 0.01, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _run_runner(tmp_path: Path, job: dict) -> dict[str, dict]:
    (tmp_path / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, runner.__file__, str(tmp_path / "job.json")], capture_output=True,
                          text=True, timeout=120, check=True)
    return {m["id"]: m for m in map(json.loads, proc.stdout.splitlines()) if m.get("type") == "result"}


def test_min_seconds_is_the_span_of_a_models_runs_not_its_timed_work(tmp_path: Path) -> None:
    """Four real ONNX models, round-robin, min_seconds 0.3: every model's runs span at least 0.3 s, but only
    at most the first one is kept running for it (how long depends on how long the others took to load); the
    others' spans are filled by the rounds between (each is timed for well under 0.3 s). Before, every model was timed for 0.3 s (a quiet 97-entry profile: 21 s of a 30 s
    run). A model measured alone in one round (the noise floor's measurement) is still timed that long."""
    models = [{"id": f"m{i}", "path": str(_matmul_onnx(tmp_path / f"m{i}.onnx", 32 + 16 * i))} for i in range(4)]
    job = {"runtime": "onnxruntime", "threads": 1, "warmup": 1, "runs": 6, "min_seconds": 0.3, "rounds": 3,
           "cooldown_s": 0, "max_temp_c": 75, "precision": None, "max_entry_s": 10, "models": models}
    got = _run_runner(tmp_path, job)
    assert sorted(got) == ["m0", "m1", "m2", "m3"]
    for res in got.values():
        assert res["span_s"] >= 0.3 and res["rounds"] == 3 and res["runs"] >= 6
    worked = {mid: res["seconds"] for mid, res in got.items()}  # time spent on the model, not loading it
    assert all(worked[m] < 0.15 for m in ("m1", "m2", "m3")), worked
    alone = _run_runner(tmp_path, {**job, "rounds": 1, "models": models[:1]})["m0"]
    assert alone["seconds"] >= 0.3 and alone["span_s"] >= 0.3


# ------------------------------------------------------------------------ calibration (one owner)


def test_calibration_line_recovers_a_line_and_handles_the_degenerate_cases() -> None:
    from hwnas.profiler.calibration import calibration_line, interleave, residuals_pct

    xs = np.array([1.0, 2.0, 4.0, 8.0])
    a, b = calibration_line(xs, 1.25 * xs + 0.3, overhead=0.1)  # whole networks 25% slower than their entries
    assert a == pytest.approx(1.25) and b == pytest.approx(0.3)
    assert residuals_pct(a, b, xs, 1.25 * xs + 0.3).max() == pytest.approx(0.0, abs=1e-9)
    # two networks: the ratio of medians through the overhead
    assert calibration_line([1.0, 3.0], [1.6, 4.6], overhead=0.1) == pytest.approx((1.5, 0.1))
    # a benchmark program that prints the same numbers for every model: every sum is 0
    assert calibration_line([0.0, 0.0, 0.0], [2.0, 3.0, 4.0], overhead=0.5) == (1.0, 3.0)
    assert calibration_line([], [], overhead=0.5) == (1.0, 0.5)
    mixed = interleave(list("abcdefgh"), ["N1", "N2"])
    assert mixed == ["N1", "a", "b", "c", "d", "N2", "e", "f", "g", "h"]
    assert interleave([], ["N1"]) == ["N1"]


def test_calibration_line_leaves_out_a_network_measured_far_off_the_line() -> None:
    from hwnas.profiler.calibration import calibration_line

    xs = np.array([1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0])
    ys = 1.2 * xs + 0.1
    ys[3] *= 1.45  # one subnet measured while a load held the core (seen under benchmarks/_load.py)
    a, b = calibration_line(xs, ys, overhead=0.05)
    assert a == pytest.approx(1.2, rel=1e-6) and b == pytest.approx(0.1, rel=1e-6)
    noisy = 1.2 * xs + 0.1 + np.array([0.01, -0.02, 0.015, -0.01, 0.02, -0.015, 0.01, -0.02])  # ordinary noise
    a2, _ = calibration_line(xs, noisy, overhead=0.05)
    assert a2 == pytest.approx(1.2, rel=0.03)


def test_calibration_fit_takes_a_parameters_term_only_where_it_predicts_better() -> None:
    """Networks that pay per parameter (weights fetched from memory in the network): the fit finds the term
    and predicts every network within 0.5%, where the line is off by several percent; networks that do not
    (the line fits, the term would be negative) and too few networks keep c = 0 and the line's a, b."""
    from hwnas.profiler.calibration import calibration_fit, calibration_line, residuals_pct

    xs = np.array([1.0, 1.4, 1.9, 2.3, 2.8, 3.1, 3.9, 4.6])
    ws = np.array([2.0, 4.5, 1.5, 5.0, 2.5, 6.0, 3.0, 5.5])  # parameters (M), not in step with xs
    wiggle = 1 + np.array([0.002, -0.003, 0.001, -0.002, 0.003, -0.001, 0.002, -0.002])
    ys = (1.3 * xs + 0.12 * ws + 0.1) * wiggle
    a, b, c = calibration_fit(xs, ys, 0.05, ws)
    assert a == pytest.approx(1.3, rel=0.02) and c == pytest.approx(0.12, rel=0.1)
    assert residuals_pct(a, b, xs, ys, c, ws).max() < 0.5
    line = calibration_line(xs, ys, 0.05)
    assert residuals_pct(*line, xs, ys).max() > 3.0  # what the line alone leaves
    plain = (1.3 * xs + 0.1) * wiggle - 0.05 * (ws - ws.mean())  # more parameters, cheaper: c would be < 0
    assert calibration_fit(xs, plain, 0.05, ws) == (*calibration_line(xs, plain, 0.05), 0.0)
    assert calibration_fit(xs[:5], ys[:5], 0.05, ws[:5]) == (*calibration_line(xs[:5], ys[:5], 0.05), 0.0)
    assert calibration_fit(xs, ys, 0.05) == (*line, 0.0)
