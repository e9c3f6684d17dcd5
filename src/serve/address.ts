/** Where `colo serve` listens by default, and how an address is written (no dependencies: the CLI's help imports it). */

/** Loopback: the server has no authentication. */
export const DEFAULT_SERVE_HOST = "127.0.0.1";
/** In Prometheus's exporter port range; the port OpenTelemetry's Prometheus exporter uses. */
export const DEFAULT_SERVE_PORT = 9464;

/** HOST:PORT, IPv6 in brackets. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
