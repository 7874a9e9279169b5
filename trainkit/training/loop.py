"""The training loop: one, for a lone run and for a sweep's vmapped group alike.

It reads top to bottom and delegates: the timetable of calls and checkpoints
to a `cadence.Plan`, each run's books (divergence, logs, plateaus, early
stopping, checkpoints, tracking, the progress display) to `members.Members`,
profiling to `profiling.StepTracer`, signals to `preemption`.
"""

import sys

from trainkit.data import calls
from trainkit.data import pipeline as input_pipeline
from trainkit.runtime import parallel
from trainkit.runtime import preemption
from trainkit.runtime import profiling
from trainkit.training import cadence
from trainkit.training import members as members_lib


def train_loop(runs: list, program, data: input_pipeline.Data):
  """Trains `runs` (each at the same step) to their last epoch, evaluating each epoch.

  The one training loop: `program` runs the device calls (programs.MeshSteps
  for one run, trainkit/search/groups.py's vmapped program for several);
  `Members` keeps each run's books. The runs share every config field that
  shapes the loop. Returns (final state as `program` holds it, [summary
  dict, or None for a run that diverged]).
  """
  config = runs[0].config
  plan = cadence.Plan(config, runs[0].spec.steps_per_epoch, data)
  members = members_lib.Members(runs, program, plan)
  step = first_step = runs[0].step
  state = members.take_state()
  rng = program.dropout_keys([run.config for run in runs])
  # The epochs are evaluated on the validation split (the test split is for
  # the end: Run.finish), or on the test split if there is none.
  eval_data = input_pipeline.validation_view(data)
  source = data.train if data.mode == 'device' else None
  tracer = profiling.StepTracer(config.profile_steps, [run.workdir for run in runs])
  eval_metrics, stopping = None, False
  try:
    members.open(step, plan.total_steps)  # In the try: a member's failure closes the others.
    with preemption.stop_on_signals() as stop, members.show.logs_above_bar():
      for epoch in plan.epochs(step):
        if not members.alive():
          break
        members.start_epoch(epoch, step)
        spans = plan.spans(epoch, step, tracer.call_ends())
        for num_steps, batches in members.calls(data, epoch, spans, plan.length):
          tracer.before_call(step)
          state, metrics = program.train(state, batches, rng, members.steps(num_steps), source)
          members.after_call(step, num_steps, metrics)
          step += num_steps
          tracer.after_call(step, state)
          stopping = parallel.any_process(stop)  # Any process's signal stops them all.
          if stopping and step % plan.steps_per_epoch == 0:
            break  # The epoch is trained: its books first, as a resume starts at the next.
          if plan.checkpoint_due(step) or stopping:
            members.checkpoint(step, state)
          if stopping:
            raise preemption.Interrupted(stop.signum, step, members.where())
          if not members.alive():
            break
        members.flush()
        if members.alive():
          eval_metrics = program.evaluate(state, eval_data, config.eval_batch_size)
          state = members.end_epoch(epoch, step, state, eval_metrics, stopping)
        if stopping:  # Also where every run stopped at this epoch: the signal stops the process.
          raise preemption.Interrupted(stop.signum, step, members.where())
    if step == first_step:  # Nothing left to train: evaluate the restored state.
      eval_metrics = program.evaluate(state, eval_data, config.eval_batch_size)
      members.log_eval(step, eval_metrics)
  finally:
    tracer.stop()
    calls.close_stream(data)
    members.close(sys.exc_info()[1])
  return state, members.finish(state, data, eval_metrics)
