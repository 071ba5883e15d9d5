// The case runner of the Node conformance clients: every case runs even when an earlier one
// failed; prints `ok CLIENT NAME` or `FAIL CLIENT NAME: why` per case and exits 1 if any failed.

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export async function cases(client, all) {
  const failed = [];
  for (const [name, run] of Object.entries(all)) {
    const started = performance.now();
    const took = () => `(${((performance.now() - started) / 1000).toFixed(2)} s)`;
    try {
      await run();
      console.log(`ok ${client} ${name} ${took()}`);
    } catch (err) {
      const why = String(err?.message ?? err).split("\n")[0];
      console.log(`FAIL ${client} ${name} ${took()}: ${err?.constructor?.name ?? "Error"}: ${why}`);
      console.error(err);
      failed.push(name);
    }
  }
  if (failed.length) {
    console.log(`${client}: ${failed.length} failed: ${failed.join(", ")}`);
    process.exit(1);
  }
  console.log(`${client}: all passed`);
}
