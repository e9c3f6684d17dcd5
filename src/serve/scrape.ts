/**
 * One `/metrics` scrape: every live daemon of the host is asked for its
 * metrics (each within a bound), the answers are merged with
 * prom-client's AggregatorRegistry.aggregate() (each daemon's series carry
 * its own `vm` label, so none are summed together) with this process's own
 * metrics, and served in Prometheus's text format. A daemon that does not
 * answer, or answers something that is not metrics, is left out of this
 * scrape and counted in `colo_scrape_errors_total`.
 */
import { AggregatorRegistry, Counter, Gauge, Registry } from "prom-client";
import { monotonicMs } from "../sys/clock.js";
import { askLiveDaemons, DEFAULT_DAEMON_TIMEOUT_MS, type DaemonErrorCode } from "./daemons.js";
import { MetricsAnswerError, parseMetricsAnswer, type MetricJson } from "./metrics-json.js";

export interface ScrapeOptions {
  /** The run directory whose daemons are asked (default: this host's, src/api/paths.ts). */
  dir?: string;
  /** How long one daemon may take to answer (ms). */
  timeoutMs?: number;
  /** Told of each daemon left out of a scrape (the reason, one line). */
  onError?: (message: string) => void;
}

export interface Scrape {
  text: string;
  contentType: string;
}

const CAUSES: Record<DaemonErrorCode, string> = { TIMEOUT: "timeout", UNREACHABLE: "unreachable", PROTOCOL: "protocol", REFUSED: "refused", BAD_ANSWER: "bad_answer" };

export class Scraper {
  /** This process's own metrics, merged into every scrape. */
  readonly registry = new Registry();
  private readonly errors = new Counter({
    name: "colo_scrape_errors_total",
    help: "Daemons left out of a scrape, by VM and cause (timeout: no answer in time; unreachable; protocol; refused: e.g. a daemon too old to know the metrics request; bad_answer)",
    labelNames: ["vm", "cause"],
    registers: [this.registry],
  });
  private readonly daemons = new Gauge({ name: "colo_scrape_daemons", help: "Live VM daemons at the last scrape, by whether they answered", labelNames: ["result"], registers: [this.registry] });
  private readonly duration = new Gauge({ name: "colo_scrape_duration_seconds", help: "How long the last scrape took to ask every daemon", registers: [this.registry] });
  private readonly timeoutMs: number;

  constructor(private readonly opts: ScrapeOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_DAEMON_TIMEOUT_MS;
  }

  async scrape(): Promise<Scrape> {
    const t0 = monotonicMs();
    const answers = await askLiveDaemons({ op: "metrics" }, this.timeoutMs, this.opts.dir);
    const sets: MetricJson[][] = [];
    let failed = 0;
    for (const a of answers) {
      let cause: DaemonErrorCode | undefined;
      let message = "";
      if (a.ok) {
        try {
          sets.push(parseMetricsAnswer(a.result));
        } catch (err) {
          if (!(err instanceof MetricsAnswerError)) throw err;
          cause = "BAD_ANSWER";
          message = `${a.name}: ${err.message}`;
        }
      } else {
        cause = a.code;
        message = a.error;
      }
      if (cause === undefined) continue;
      failed++;
      this.errors.inc({ vm: a.name, cause: CAUSES[cause] });
      this.opts.onError?.(`left out of the scrape: ${message}`);
    }
    this.daemons.reset();
    this.daemons.set({ result: "answered" }, answers.length - failed);
    this.daemons.set({ result: "failed" }, failed);
    this.duration.set((monotonicMs() - t0) / 1000);
    sets.push(parseMetricsAnswer(await this.registry.getMetricsAsJSON()));
    const merged = AggregatorRegistry.aggregate(sets);
    return { text: await merged.metrics(), contentType: merged.contentType };
  }
}
