"""ptq4sam.quantize and ptq4sam.evaluate against `ptq4sam quantize` and `ptq4sam eval`."""
import json
import os
import subprocess
import tempfile
import unittest

import ptq4sam
from test_predictor import BINARY, SAM_TINY, require_fixture

# Fast observers, as tests/cli_quantize_test.cc's; BIG and AGQ are tested in C++.
FAST_CONFIG = """a_qconfig: {quantizer: LSQFakeQuantize, observer: AvgMinMaxObserver, bit: 8, symmetric: False, ch_axis: -1}
w_qconfig: {quantizer: FixedFakeQuantize, observer: MinMaxObserver, bit: 4, symmetric: False, ch_axis: 0}
calibrate: 2
ptq4sam: {BIG: False, AGQ: False}
"""


def comparable(report):
    """A report without what differs between two runs of the same job: timings and output paths."""
    if isinstance(report, dict):
        return {k: comparable(v) for k, v in report.items() if not k.endswith("seconds") and k not in ("out", "report")}
    if isinstance(report, list):
        return [comparable(v) for v in report]
    return report


def cli(*args):
    run = subprocess.run([BINARY, *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise AssertionError("ptq4sam %s failed: %s" % (" ".join(args), run.stderr))
    return run


class Jobs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = cls.tmp.name
        cls.synth = os.path.join(cls.dir, "synth")
        cli("synth-coco", "--images", "2", "--out", cls.synth)
        cls.config = os.path.join(cls.dir, "fast.yaml")
        with open(cls.config, "w") as out:
            out.write(FAST_CONFIG)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.dir, name)

    def quantize_options(self):
        return dict(calib_annotations=os.path.join(self.synth, "instances.json"),
                    calib_prompts=os.path.join(self.synth, "detections.json"), threads=2)

    def test_quantize_and_evaluate_are_the_binarys(self):
        require_fixture(self)
        model = os.path.join(SAM_TINY, "checkpoint.pth")
        images = os.path.join(self.synth, "images")
        updates = []
        report = ptq4sam.quantize(model, self.config, images, self.path("py.safetensors"),
                                  progress=lambda label, done, total: updates.append((label, done, total)),
                                  **self.quantize_options())
        cli("quantize", "--model", model, "--config", self.config, "--calib-images", images,
            "--calib-annotations", os.path.join(self.synth, "instances.json"),
            "--calib-prompts", os.path.join(self.synth, "detections.json"), "--threads", "2",
            "--out", self.path("cli.safetensors"), "--report", self.path("cli.report.json"))
        with open(self.path("py.safetensors"), "rb") as a, open(self.path("cli.safetensors"), "rb") as b:
            self.assertEqual(a.read(), b.read(), "the module's artifact differs from the binary's")
        with open(self.path("cli.report.json")) as f:
            self.assertEqual(comparable(report), comparable(json.load(f)))
        self.assertTrue(os.path.exists(self.path("py.safetensors.report.json")))
        self.assertTrue(updates, "no progress reported")
        self.assertTrue(all(label.startswith("calibrate: ") for label, _, _ in updates), updates[:3])
        self.assertTrue(any(done == total for _, done, total in updates))

        prompts = os.path.join(self.synth, "detections.json")
        annotations = os.path.join(self.synth, "instances.json")
        metrics = ptq4sam.evaluate(self.path("py.safetensors"), images, annotations, self.path("eval_py"),
                                   prompts=prompts, threads=2)
        cli("eval", "--model", self.path("cli.safetensors"), "--images", images, "--annotations", annotations,
            "--prompts", prompts, "--threads", "2", "--out", self.path("eval_cli"))
        with open(self.path("eval_cli/metrics.json")) as f:
            self.assertEqual(metrics, json.load(f))
        self.assertEqual(len(metrics["stats"]), 12)

    def test_bad_options_raise(self):
        require_fixture(self)
        model = os.path.join(SAM_TINY, "checkpoint.pth")
        images = os.path.join(self.synth, "images")
        with self.assertRaises(ValueError) as caught:
            ptq4sam.quantize(model, self.config, images, self.path("x.safetensors"), no_such_option=3)
        self.assertIn("no-such-option", str(caught.exception))
        with self.assertRaises(ValueError):
            ptq4sam.quantize(self.path("missing.pth"), self.config, images, self.path("x.safetensors"))
        bad_config = self.path("bad.yaml")
        with open(bad_config, "w") as out:
            out.write(FAST_CONFIG + "no_such_key: 1\n")
        with self.assertRaises(RuntimeError) as caught:
            ptq4sam.quantize(model, bad_config, images, self.path("x.safetensors"), **self.quantize_options())
        self.assertIn("no_such_key", str(caught.exception))
        with self.assertRaises(ValueError):
            ptq4sam.evaluate(model, images, os.path.join(self.synth, "instances.json"), self.path("e"), progress=3)

    def test_a_raising_callback_stops_the_job(self):
        require_fixture(self)

        def stop(label, done, total):
            raise KeyboardInterrupt("stopped by the callback")

        with self.assertRaises(KeyboardInterrupt):
            ptq4sam.quantize(os.path.join(SAM_TINY, "checkpoint.pth"), self.config, os.path.join(self.synth, "images"),
                             self.path("stopped.safetensors"), progress=stop, **self.quantize_options())
        self.assertFalse(os.path.exists(self.path("stopped.safetensors")))


if __name__ == "__main__":
    unittest.main()
