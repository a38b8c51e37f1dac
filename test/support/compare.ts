import assert from "node:assert/strict";

/** Deep equality where numbers may differ by `eps` (JS engines differ in the last bits of Math.exp). */
export function assertDeepClose(actual: unknown, expected: unknown, eps: number, path = "$"): void {
  if (typeof expected === "number" && typeof actual === "number") {
    assert.ok(Math.abs(actual - expected) <= eps, `${path}: ${actual} vs ${expected} (eps ${eps})`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${path}: expected an array, got ${JSON.stringify(actual)}`);
    assert.equal(actual.length, expected.length, `${path}: length`);
    expected.forEach((e, i) => assertDeepClose(actual[i], e, eps, `${path}[${i}]`));
  } else if (expected && typeof expected === "object") {
    assert.ok(actual && typeof actual === "object" && !Array.isArray(actual), `${path}: expected an object`);
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${path}: keys`);
    for (const [k, v] of Object.entries(expected)) assertDeepClose((actual as Record<string, unknown>)[k], v, eps, `${path}.${k}`);
  } else {
    assert.equal(actual, expected, path);
  }
}
