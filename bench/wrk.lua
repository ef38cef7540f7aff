-- wrk script for the gemini-balance benchmark (bench/README.md).
-- The request comes from the environment, so one script serves every scenario:
--   BENCH_BODY    the POST body (JSON)
--   BENCH_HEADER  one extra header, "name: value" (the user key or the pool key)
-- At the end it prints one machine-readable line that examples/bench.rs parses:
--   BENCH requests=… duration_us=… p50_us=… p99_us=… errors_…=…
-- By hand: BENCH_BODY='{"contents":[{"parts":[{"text":"hi"}]}]}' \
--   BENCH_HEADER='x-goog-api-key: gb-…' wrk -t2 -c64 -d5s -s bench/wrk.lua \
--   'http://127.0.0.1:8090/v1beta/models/gemini-2.5-flash:generateContent'

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or ""
wrk.headers["Content-Type"] = "application/json"
local name, value = (os.getenv("BENCH_HEADER") or ""):match("^([^:]+):%s*(.*)$")
if name then
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%.1f p99_us=%.1f mean_us=%.1f "
      .. "errors_connect=%d errors_read=%d errors_write=%d errors_status=%d errors_timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
