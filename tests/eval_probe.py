"""Run one evaluation in its own process, for the kill-and-resume and memory tests (not a test module).

    python tests/eval_probe.py CHECKPOINT TASK_DIR TASK OUT.json [resume=PATH] [slow=SECONDS]

Evaluates ``uniform_qwen2vl`` (stride 2, batches of 2) on the task in TASK_DIR through lmms-eval
(only that folder indexed), counts the samples the wrapper computed (not answered from its store),
and writes the answers, records, computed count and peak resident memory to OUT.json. ``slow``
sleeps after each batch, so a test can kill the process part-way.
"""

import json
import resource
import sys
import time


def main() -> None:
    checkpoint, task_dir, task, out, *extra = sys.argv[1:]
    options = dict(item.split("=", 1) for item in extra)
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.models import get_model
    from lmms_eval.tasks import TaskManager

    lm = get_model("uniform_qwen2vl")(pretrained=checkpoint, device="cpu", max_num_frames=8, stride=2, batch_size=2,
                                      max_new_tokens=4, resume=options.get("resume", False))
    computed = []
    run = lm._run

    def counted(batch):
        computed.extend(sample.index for sample in batch)
        results = run(batch)
        time.sleep(float(options.get("slow", 0)))
        return results

    lm._run = counted
    result = simple_evaluate(model=lm, tasks=[task], log_samples=True,
                             task_manager=TaskManager(include_path=task_dir, include_defaults=False))
    samples = sorted(result["samples"][task], key=lambda s: s["doc_id"])
    record = {"computed": len(computed), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "answers": [s["resps"][0][0] if isinstance(s["resps"][0], list) else s["resps"][0] for s in samples],
              "records": [s["token_counts"][0] for s in samples], "metrics": result["results"][task],
              "throughput": result.get("throughput", {})}
    with open(out, "w") as f:
        json.dump(record, f, default=str)


if __name__ == "__main__":
    main()
