// The operator console in a headless Chromium, run by tests/console.rs against `tandem demo`.
// Env: BASE_URL, OPERATOR_TOKEN, MARKET, CHROMIUM_EXE, PLAYWRIGHT_CORE_DIR, BATCH_TIMEOUT_SECS.
// Prints one line per step; `step: logged in` tells the Rust side to make the trades whose batch
// this script then waits for. Exits non-zero with the reason (and a screenshot path) on failure.
import { pathToFileURL } from "node:url";
import path from "node:path";

const need = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = need("BASE_URL");
const token = need("OPERATOR_TOKEN");
const market = need("MARKET");
const batchTimeout = Number(process.env.BATCH_TIMEOUT_SECS || "240") * 1000;
const { chromium } = await import(pathToFileURL(path.join(need("PLAYWRIGHT_CORE_DIR"), "index.mjs")).href);

const step = (s) => console.log("step: " + s);
const browser = await chromium.launch({ executablePath: need("CHROMIUM_EXE"), headless: true });
const page = await browser.newPage();
// Any script error or CSP violation in the page fails the test.
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push("page error: " + e.message));
// The 401 answering the wrong token is expected; the browser logs it as a failed load.
const expected = (text) => text.includes("status of 401");
page.on("console", (m) => { if (m.type() === "error" && !expected(m.text())) pageErrors.push("console error: " + m.text()); });
const noPageErrors = () => {
  if (pageErrors.length) throw new Error(pageErrors.join("\n"));
};

async function run() {
  const res = await page.goto(base + "/console");
  if (res.status() !== 200) throw new Error(`GET /console answered ${res.status()}`);
  const csp = res.headers()["content-security-policy"] || "";
  if (!csp.includes("script-src 'self'")) throw new Error("no Content-Security-Policy on the page: " + csp);
  await page.locator("#login-form").waitFor({ state: "visible" });

  // A wrong token is refused with a clear message, and nothing is shown.
  await page.fill("#token", "not-the-operator-token");
  await page.click("#login-button");
  await page.locator("#login-error", { hasText: "refused" }).waitFor({ timeout: 10_000 });
  if (await page.isVisible("#dashboard")) throw new Error("the dashboard shows after a wrong token");
  if (await page.evaluate(() => sessionStorage.length) !== 0) throw new Error("a wrong token was kept");
  step("wrong token refused");

  await page.fill("#token", token);
  await page.click("#login-button");
  await page.locator("#dashboard").waitFor({ state: "visible", timeout: 10_000 });
  await page.locator(`#markets-table tr[data-market="${market}"][data-halted="false"]`).waitFor({ timeout: 15_000 });
  await page.locator('#health-table tr[data-check="settlement"]', { hasText: "running" }).waitFor({ timeout: 15_000 });
  const before = await page.$$eval("#batches-table tbody tr", (rows) => rows.map((r) => Number(r.dataset.batch)));
  const newest = before.length ? Math.max(...before) : 0;
  noPageErrors();
  step(`logged in (${before.length} batches so far)`);

  // The Rust side trades now; the page refreshes by itself until the batch shows.
  const newBatch = `#batches-table tbody tr[data-batch]`;
  const appeared = await page.waitForFunction((newest) => {
    const rows = [...document.querySelectorAll("#batches-table tbody tr[data-batch]")];
    const fresh = rows.map((r) => Number(r.dataset.batch)).filter((b) => b > newest);
    return fresh.length ? Math.min(...fresh) : null;
  }, newest, { timeout: batchTimeout, polling: 500 });
  const id = await appeared.jsonValue();
  const status = await page.getAttribute(`${newBatch}[data-batch="${id}"]`, "data-status");
  step(`batch ${id} appeared (${status})`);
  if (await page.locator("#chart-fees rect.bar").count() < 1) throw new Error("the fee chart has no bar for the batch");

  await page.locator(`${newBatch}[data-batch="${id}"][data-status="confirmed"]`).waitFor({ timeout: batchTimeout });
  const confirmations = await page.getAttribute(`${newBatch}[data-batch="${id}"]`, "data-confirmations");
  if (!(Number(confirmations) >= 1)) throw new Error(`batch ${id} confirmed with ${confirmations} confirmations`);
  const txid = await page.locator(`${newBatch}[data-batch="${id}"] code`).first().getAttribute("title");
  if (!/^[0-9a-f]{64}$/.test(txid || "")) throw new Error(`batch ${id} shows no txid: ${txid}`);
  step(`batch ${id} confirmed (${confirmations} confirmations, txid ${txid})`);
  await page.locator("#recon-verdict", { hasText: "Balanced" }).waitFor({ timeout: 15_000 });
  await page.locator("#recon-audit", { hasText: `after batch` }).waitFor({ timeout: 15_000 });
  if (await page.locator("#chart-exposure path").count() < 1) throw new Error("the exposure chart drew no line");
  step("reconciliation balanced, audit shown, exposure charted");

  // A panel that throws while drawing shows here instead of as a page error.
  const refreshed = await page.textContent("#refreshed");
  if (!refreshed.startsWith("updated")) throw new Error("the page's last refresh failed: " + refreshed);

  // Halt the market (the page asks for confirmation first).
  page.once("dialog", (d) => d.accept());
  await page.click(`#markets-table tr[data-market="${market}"] button.halt`);
  await page.locator(`#markets-table tr[data-market="${market}"][data-halted="true"]`).waitFor({ timeout: 15_000 });
  await page.locator("#notice", { hasText: `${market} halted` }).waitFor({ timeout: 5_000 });
  step(`${market} halted`);

  await page.click("#logout");
  await page.locator("#login-form").waitFor({ state: "visible", timeout: 5_000 });
  if (await page.evaluate(() => sessionStorage.length) !== 0) throw new Error("logout left the token in session storage");
  if (await page.isVisible("#dashboard")) throw new Error("the dashboard shows after logout");
  noPageErrors();
  step("logged out");
}

try {
  await run();
  await browser.close();
} catch (e) {
  const shot = process.env.SCREENSHOT;
  if (shot) await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
  console.error("console test failed: " + (e && e.stack ? e.stack : e));
  if (pageErrors.length) console.error(pageErrors.join("\n"));
  if (shot) console.error("screenshot: " + shot);
  await browser.close().catch(() => {});
  process.exit(1);
}
