import { test } from "node:test";
import assert from "node:assert/strict";
import { WIRE_FORMAT_VERSION } from "../src/index.js";

test("the package loads", () => {
  assert.equal(WIRE_FORMAT_VERSION, 1);
});
