import client from 'prom-client';

/**
 * Prometheus metrics, one registry per server. Latency histograms are in seconds with buckets from
 * 50 us to 0.5 s; labels are the configured model names (bounded) and fixed reason sets, never the
 * client-chosen stream id.
 */
const LATENCY_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512];

export class ServerMetrics {
  readonly registry = new client.Registry();
  readonly framesReceived = new client.Counter({ name: 'cortexcast_frames_received_total', help: 'Response frames received over gRPC', labelNames: ['model'], registers: [this.registry] });
  readonly framesDecoded = new client.Counter({ name: 'cortexcast_frames_decoded_total', help: 'Frames decoded and fanned out', labelNames: ['model'], registers: [this.registry] });
  readonly framesDropped = new client.Counter({ name: 'cortexcast_frames_dropped_total', help: 'Accepted frames not decoded, by reason', labelNames: ['model', 'reason'], registers: [this.registry] });
  readonly framesRejected = new client.Counter({ name: 'cortexcast_frames_rejected_total', help: 'Invalid frames and requests, by error code', labelNames: ['reason'], registers: [this.registry] });
  readonly unaryDecodes = new client.Counter({ name: 'cortexcast_unary_decodes_total', help: 'Unary Decode calls that reached the scheduler, by gRPC status', labelNames: ['model', 'code'], registers: [this.registry] });
  readonly clockProblems = new client.Counter({
    name: 'cortexcast_clock_problems_total',
    help: 'Frames whose acquired_at_us is more than 60 s behind or 1 s ahead of the server clock (left out of origin=acquired latency)',
    labelNames: ['model', 'kind'],
    registers: [this.registry],
  });
  readonly subscriberSkips = new client.Counter({ name: 'cortexcast_subscriber_frames_skipped_total', help: 'Frames not sent to a slow WebSocket subscriber', labelNames: ['model'], registers: [this.registry] });
  readonly endToEnd = new client.Histogram({
    name: 'cortexcast_end_to_end_seconds',
    help: 'From acquisition (origin=acquired, when the rig stamps it) or from ingest (origin=ingested) to the frame being sent',
    labelNames: ['model', 'origin'],
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly queueWait = new client.Histogram({ name: 'cortexcast_queue_wait_seconds', help: 'Ingest to decode start', labelNames: ['model'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly decode = new client.Histogram({ name: 'cortexcast_decode_seconds', help: 'Model run time per batch', labelNames: ['model', 'provider'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly batchSize = new client.Histogram({ name: 'cortexcast_decode_batch_frames', help: 'Frames decoded together per run', labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64], registers: [this.registry] });
  readonly send = new client.Histogram({ name: 'cortexcast_send_seconds', help: 'Decode end to all subscribers written (encode + send)', labelNames: ['model'], buckets: LATENCY_BUCKETS, registers: [this.registry] });
  readonly streams = new client.Gauge({ name: 'cortexcast_streams', help: 'Open ingest streams', registers: [this.registry] });
  readonly subscribers = new client.Gauge({ name: 'cortexcast_subscribers', help: 'Connected WebSocket subscribers', registers: [this.registry] });
  readonly queueDepth = new client.Gauge({ name: 'cortexcast_queue_depth', help: 'Frames waiting for a worker', labelNames: ['model'], registers: [this.registry] });
  readonly workerBusy = new client.Gauge({ name: 'cortexcast_worker_busy_ratio', help: 'Fraction of inference workers busy at scrape time', labelNames: ['model'], registers: [this.registry] });
  readonly workersAlive = new client.Gauge({ name: 'cortexcast_workers_alive', help: 'Inference worker threads able to run (0: the model cannot decode until reloaded)', labelNames: ['model'], registers: [this.registry] });
  readonly serving = new client.Gauge({ name: 'cortexcast_serving', help: '1 while the server takes work and every model has a live inference worker (what /healthz reports), else 0', registers: [this.registry] });
  readonly connectionsRefused = new client.Counter({
    name: 'cortexcast_connections_refused_total',
    help: 'gRPC connections closed by the server before or instead of serving them, by reason (max_connections, per_peer, evicted, handshake_timeout)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly callsRefused = new client.Counter({
    name: 'cortexcast_calls_refused_total',
    help: 'gRPC calls and HTTP requests refused before their body was read, by reason (unauthenticated, admin_token, watch_limit, reload_rate, bad_host, bad_origin)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly acks = new client.Counter({ name: 'cortexcast_acks_total', help: 'Acks written to ingest streams, by status (every accepted frame gets one DECODED or DROPPED)', labelNames: ['status'], registers: [this.registry] });
  readonly messagesRead = new client.Counter({ name: 'cortexcast_grpc_messages_read_total', help: 'gRPC request messages read and deserialised (a call refused from its metadata reads none)', registers: [this.registry] });
  readonly connections = new client.Gauge({ name: 'cortexcast_connections', help: 'Open gRPC connections: proven (a call carried the token) or unproven', labelNames: ['pool'], registers: [this.registry] });
  readonly modelInfo = new client.Gauge({ name: 'cortexcast_model_info', help: 'Loaded models (value 1) with their execution provider and kind', labelNames: ['model', 'provider', 'kind'], registers: [this.registry] });

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
    // prom-client's totals of these are gauges named like counters (promtool rejects the suffix);
    // the per-type gauges it also exports sum to the same figure: sum(nodejs_active_handles).
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
  }
}
