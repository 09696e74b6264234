/** One finding of `bootfleet doctor`: what it saw and, unless ok, what to do about it. */
export interface CheckResult {
  name: string;
  status: "ok" | "warn" | "fail";
  detail: string;
  fix?: string;
}
