// Graphile Worker, measured by `python -m bench peers`: run N already-queued no-op jobs
// ("noop") with the given concurrency, print one JSON line {jobs, seconds, per_s}.
//
//   node graphile_bench.js migrate DATABASE_URL
//   node graphile_bench.js work DATABASE_URL JOBS CONCURRENCY
"use strict";
const { run, runMigrations } = require("graphile-worker");

async function main() {
  const [mode, connectionString, jobsText, concurrencyText] = process.argv.slice(2);
  const logFactory = () => () => {};
  const { Logger } = require("graphile-worker");
  const logger = new Logger(logFactory);
  if (mode === "migrate") {
    await runMigrations({ connectionString, logger });
    return;
  }
  const jobs = Number(jobsText);
  const concurrency = Number(concurrencyText);
  let done = 0;
  let failed = 0;
  let finish;
  const allDone = new Promise((resolve) => { finish = resolve; });
  const start = process.hrtime.bigint();
  const runner = await run({
    connectionString,
    concurrency,
    noHandleSignals: true,
    pollInterval: 2000,
    logger,
    taskList: { noop: async () => {} },
  });
  runner.events.on("job:success", () => { done += 1; if (done + failed >= jobs) finish(); });
  runner.events.on("job:failed", () => { failed += 1; if (done + failed >= jobs) finish(); });
  await allDone;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await runner.stop();
  console.log(JSON.stringify({ jobs: done, failed, seconds, per_s: done / seconds }));
}

main().catch((err) => { console.error(String(err && err.message || err)); process.exit(1); });
