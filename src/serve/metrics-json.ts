/**
 * A daemon's answer to the `metrics` request (prom-client's
 * getMetricsAsJSON(), src/api/metrics.ts), checked before it is merged:
 * the answer crosses a socket, so it is parsed once, here, into the shape
 * AggregatorRegistry.aggregate() takes. A bad answer is refused whole,
 * naming the first thing wrong.
 */
import type { Aggregator } from "prom-client";

/** One metric as getMetricsAsJSON() gives it (prom-client's declared type has `type` as an enum; at run time it is this string). */
export interface MetricJson {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram" | "summary";
  aggregator: Aggregator;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

const TYPES = new Set<string>(["counter", "gauge", "histogram", "summary"]);
const AGGREGATORS = new Set<string>(["omit", "sum", "first", "min", "max", "average"]);
/** Prometheus's data model (prometheus.io/docs/concepts/data_model): metric and label names. */
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export class MetricsAnswerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MetricsAnswerError";
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Parses a daemon's metrics answer; throws MetricsAnswerError. */
export function parseMetricsAnswer(answer: unknown): MetricJson[] {
  if (!Array.isArray(answer)) throw new MetricsAnswerError("the metrics answer is not an array");
  return answer.map((m: unknown, i): MetricJson => {
    if (!isObject(m)) throw new MetricsAnswerError(`metric ${i} is not an object`);
    const { name, help, type, aggregator, values } = m;
    if (typeof name !== "string" || !METRIC_NAME.test(name)) throw new MetricsAnswerError(`metric ${i}: bad name ${JSON.stringify(name)}`);
    if (typeof help !== "string") throw new MetricsAnswerError(`${name}: help is not a string`);
    if (typeof type !== "string" || !TYPES.has(type)) throw new MetricsAnswerError(`${name}: unknown type ${JSON.stringify(type)}`);
    if (aggregator !== undefined && (typeof aggregator !== "string" || !AGGREGATORS.has(aggregator))) throw new MetricsAnswerError(`${name}: unknown aggregator ${JSON.stringify(aggregator)}`);
    if (!Array.isArray(values)) throw new MetricsAnswerError(`${name}: values is not an array`);
    return {
      name,
      help,
      type: type as MetricJson["type"],
      aggregator: (aggregator ?? "sum") as Aggregator,
      values: values.map((v: unknown, j) => {
        if (!isObject(v) || typeof v.value !== "number") throw new MetricsAnswerError(`${name}: value ${j} has no number`);
        const labels: Record<string, string | number> = {};
        if (v.labels !== undefined) {
          if (!isObject(v.labels)) throw new MetricsAnswerError(`${name}: value ${j}: labels is not an object`);
          for (const [k, x] of Object.entries(v.labels)) {
            if (!LABEL_NAME.test(k) || (typeof x !== "string" && typeof x !== "number")) throw new MetricsAnswerError(`${name}: value ${j}: bad label ${JSON.stringify(k)}`);
            labels[k] = x;
          }
        }
        if (v.metricName !== undefined && (typeof v.metricName !== "string" || !METRIC_NAME.test(v.metricName))) throw new MetricsAnswerError(`${name}: value ${j}: bad metricName`);
        return { value: v.value, labels, ...(typeof v.metricName === "string" ? { metricName: v.metricName } : {}) };
      }),
    };
  });
}
