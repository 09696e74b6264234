export {
  ProcessError,
  type ProcessResult,
  type RunProcessOptions,
  runChecked,
  runProcess,
} from "./child.js";
export {
  type CancelOutcome,
  JobCancelled,
  type JobContext,
  type JobHandler,
  JobRunner,
  type JobRunnerOptions,
  type JobStep,
  parseSteps,
  type StepStatus,
  type SubmitOptions,
} from "./runner.js";
