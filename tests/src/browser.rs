//! A small driver for a real headless Chromium, over the Chrome DevTools Protocol (CDP), for
//! the whole-system tests that look at what a browser renders.
//!
//! Synchronous and blocking like the other helpers here: [`Browser::launch`] starts Chromium
//! with a fresh profile, [`Browser::open`] opens a tab as a [`Page`], and the page's methods
//! evaluate JavaScript in it, wait for conditions, click, fill fields and take screenshots.
//! Every CDP command waits at most 30 s for its answer and panics naming the method when it
//! gets none, so no test hangs on a stuck browser.
//!
//! Each page has a websocket of its own (to `/devtools/page/<target id>`); the events that
//! arrive while a command waits for its answer are handled on the spot: console errors and
//! uncaught exceptions are recorded ([`Page::console_errors`]), JavaScript dialogs are
//! answered (dismissed, or accepted after [`Page::auto_confirm`]) so a `confirm()` never
//! blocks the page, and load events are counted for [`Page::goto`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long one CDP command may take to answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start listening.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of the page's text a failed wait prints.
const PAGE_TEXT_LIMIT: usize = 2000;
/// How often [`Page::wait_for`] evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A headless Chromium process with a fresh profile; killed, and its profile removed, on drop.
pub struct Browser {
    child: Child,
    connection: RefCell<Connection>,
    /// `127.0.0.1:PORT` of the DevTools endpoint.
    endpoint: String,
    profile: crate::TempDir,
}

impl Browser {
    /// Starts headless Chromium and connects to it.
    ///
    /// The binary is `$DURACTOR_CHROMIUM`, else `/usr/bin/chromium`, else `chromium` or
    /// `chromium-browser` on `PATH`. When there is none this prints a notice and returns
    /// `None`, so the calling test can skip, unless `DURACTOR_REQUIRE_BROWSER=1`, where it
    /// panics instead (CI sets it). Panics when the binary exists but does not start.
    pub fn launch() -> Option<Browser> {
        let Some(binary) = find_chromium() else {
            let test = std::thread::current()
                .name()
                .unwrap_or("this test")
                .to_owned();
            if std::env::var("DURACTOR_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!(
                    "chromium not found (DURACTOR_REQUIRE_BROWSER=1): install it, or point \
                     DURACTOR_CHROMIUM at it, to run {test}"
                );
            }
            eprintln!(
                "chromium not found: skipping {test} (install chromium, or point \
                 DURACTOR_CHROMIUM at it; DURACTOR_REQUIRE_BROWSER=1 makes this a failure)"
            );
            return None;
        };
        let profile = crate::TempDir::new("chromium-profile");
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
                // Quiet and steady: no first-run UI, no background work, no throttled timers
                // in tabs that are not in front, no /dev/shm exhaustion in containers.
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--disable-background-timer-throttling",
                "--disable-backgrounding-occluded-windows",
                "--disable-renderer-backgrounding",
                "--hide-scrollbars",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));

        // Chromium prints `DevTools listening on ws://…` on stderr; the rest of its stderr
        // is kept (the last lines) to explain a failed start, and drained so it never blocks.
        let stderr = child.stderr.take().expect("chromium's stderr");
        let log = Arc::new(Mutex::new(VecDeque::<String>::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                    }
                    let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                    if log.len() == 40 {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let url = match rx.recv_timeout(LAUNCH_TIMEOUT) {
            Ok(url) => url,
            Err(e) => {
                let _ = child.kill();
                let status = child.wait();
                let _ = std::fs::remove_dir_all(profile.path());
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                let log: Vec<&str> = log.iter().map(String::as_str).collect();
                panic!(
                    "{} did not report its DevTools address ({}; exit status {status:?}); \
                     its stderr:\n{}",
                    binary.display(),
                    match e {
                        std::sync::mpsc::RecvTimeoutError::Timeout => "timed out",
                        std::sync::mpsc::RecvTimeoutError::Disconnected => "stderr closed",
                    },
                    log.join("\n")
                );
            }
        };
        let endpoint = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools address {url}"))
            .to_owned();
        let connection = Connection::connect(&url, "browser".to_owned());
        Some(Browser {
            child,
            connection: RefCell::new(connection),
            endpoint,
            profile,
        })
    }

    /// Opens `url` in a new tab with a 1280 × 900 viewport and waits for it to load (see
    /// [`Page::goto`]).
    pub fn open(&self, url: &str) -> Page {
        let target = self
            .connection
            .borrow_mut()
            .call("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"]
            .as_str()
            .unwrap_or_else(|| panic!("Target.createTarget answered no targetId: {target}"))
            .to_owned();
        let mut connection = Connection::connect(
            &format!("ws://{}/devtools/page/{target_id}", self.endpoint),
            "page".to_owned(),
        );
        connection.call("Page.enable", json!({}));
        connection.call("Runtime.enable", json!({}));
        let page = Page {
            connection: RefCell::new(connection),
        };
        // The window's size less the browser's own bars would depend on the build: the
        // viewport is 1280 × 900 exactly.
        page.set_viewport(1280, 900, false);
        page.goto(url);
        page
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask it to close (it then ends its helper processes itself); kill it if it lingers.
        let _ =
            self.connection
                .get_mut()
                .request("Browser.close", json!({}), Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Removed even when the test panicked (`TempDir` keeps it then): nothing to see there.
        let _ = std::fs::remove_dir_all(self.profile.path());
    }
}

/// A browser tab.
///
/// JavaScript dialogs (`alert`, `confirm`, `prompt`) are dismissed unless
/// [`auto_confirm`](Page::auto_confirm) was called; every one shown is listed by
/// [`dialogs`](Page::dialogs).
pub struct Page {
    connection: RefCell<Connection>,
}

impl Page {
    /// Navigates to `url`. For a new document it waits (at most 30 s) for its `load` event;
    /// a change of the fragment alone (`/#/a` to `/#/b`) returns at once. Panics when the
    /// page cannot be fetched at all (connection refused and the like).
    pub fn goto(&self, url: &str) {
        let mut connection = self.connection.borrow_mut();
        let loads = connection.events.loads;
        let result = connection.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            panic!("cannot open {url}: {error}");
        }
        if result.get("loaderId").is_some() {
            let loaded = connection
                .wait_event(Instant::now() + COMMAND_TIMEOUT, |events| {
                    events.loads > loads
                })
                .unwrap_or_else(|e| panic!("loading {url}: {e}"));
            assert!(
                loaded,
                "{url} did not finish loading within {COMMAND_TIMEOUT:?}"
            );
        }
    }

    /// Evaluates a JavaScript expression and returns its value as JSON (`null` for
    /// `undefined`); a promise is awaited. Panics with the exception's text when it throws
    /// (or the promise rejects).
    pub fn eval(&self, js: &str) -> Value {
        match self.try_eval(js) {
            Ok(value) => value,
            Err(exception) => panic!("JavaScript `{js}` threw: {exception}"),
        }
    }

    /// Evaluates `js_condition` every 25 ms until its value is truthy, and returns that
    /// value (a DOM node comes back as `true`). Exceptions count as "not yet" (a syntax
    /// error fails at once). On timeout, panics with the condition, its last exception, and
    /// the page's text.
    pub fn wait_for(&self, js_condition: &str, timeout: Duration) -> Value {
        let probe = format!(
            "(async () => {{ const v = await ({js_condition}\n); \
             return v ? {{ ok: true, v: (v instanceof Node ? true : v) }} : {{ ok: false }}; }})()"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match self.try_eval(&probe) {
                Ok(result) if result["ok"] == Value::Bool(true) => {
                    return result.get("v").cloned().unwrap_or(Value::Null);
                }
                Ok(_) => None,
                Err(e) if e.starts_with("SyntaxError") => {
                    panic!("cannot wait for `{js_condition}`: {e}")
                }
                Err(e) => Some(e),
            };
            if Instant::now() >= deadline {
                let threw = last_error
                    .map(|e| format!("\nits last evaluation threw: {e}"))
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for `{js_condition}`{threw}\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The `innerText` of the first element matching `selector`; panics when none does.
    pub fn text(&self, selector: &str) -> String {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); return e ? e.innerText : null; }})()",
            js_string(selector)
        );
        match self.eval(&js) {
            Value::String(text) => text,
            _ => self.missing("text", selector),
        }
    }

    /// Scrolls the first element matching `selector` into view and clicks it (the DOM's
    /// `element.click()`); panics when none matches.
    pub fn click(&self, selector: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return false; \
             e.scrollIntoView({{ block: 'center', inline: 'center' }}); e.click(); return true; }})()",
            js_string(selector)
        );
        if self.eval(&js) != Value::Bool(true) {
            self.missing("click", selector);
        }
    }

    /// Sets the value of the input, textarea or select matching `selector` (through the
    /// element's own `value` setter, so frameworks that track it notice) and dispatches
    /// `input` and `change` events; panics when none matches or it is no form field.
    pub fn fill(&self, selector: &str, value: &str) {
        let js = format!(
            "(() => {{ const e = document.querySelector({}); if (!e) return 'missing'; \
             const proto = e instanceof HTMLInputElement ? HTMLInputElement.prototype \
               : e instanceof HTMLTextAreaElement ? HTMLTextAreaElement.prototype \
               : e instanceof HTMLSelectElement ? HTMLSelectElement.prototype : null; \
             if (!proto) return 'not a form field but a <' + e.localName + '>'; \
             e.scrollIntoView({{ block: 'center' }}); e.focus(); \
             Object.getOwnPropertyDescriptor(proto, 'value').set.call(e, {}); \
             e.dispatchEvent(new Event('input', {{ bubbles: true }})); \
             e.dispatchEvent(new Event('change', {{ bubbles: true }})); \
             return 'ok'; }})()",
            js_string(selector),
            js_string(value)
        );
        match self.eval(&js) {
            Value::String(outcome) if outcome == "ok" => {}
            Value::String(outcome) if outcome != "missing" => {
                panic!("fill: `{selector}` is {outcome}")
            }
            _ => self.missing("fill", selector),
        }
    }

    /// Emulates a viewport of `width` × `height` CSS pixels (device scale factor 1); with
    /// `mobile`, a phone's (touch, and the page's `<meta name="viewport">` honoured).
    pub fn set_viewport(&self, width: u32, height: u32, mobile: bool) {
        let mut connection = self.connection.borrow_mut();
        connection.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
        connection.call(
            "Emulation.setTouchEmulationEnabled",
            json!({ "enabled": mobile }),
        );
    }

    /// Saves a PNG of the whole page (beyond the viewport) at `path`, creating its folder.
    pub fn screenshot(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        let mut connection = self.connection.borrow_mut();
        let metrics = connection.call("Page.getLayoutMetrics", json!({}));
        let size = metrics
            .get("cssContentSize")
            .unwrap_or(&metrics["contentSize"]);
        let dimension = |name: &str| size[name].as_f64().unwrap_or(0.0).ceil().max(1.0);
        let shot = connection.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {
                    "x": 0, "y": 0,
                    "width": dimension("width"), "height": dimension("height"),
                    "scale": 1,
                },
            }),
        );
        let data = shot["data"]
            .as_str()
            .unwrap_or_else(|| panic!("Page.captureScreenshot answered no data"));
        let png = data_encoding::BASE64
            .decode(data.as_bytes())
            .unwrap_or_else(|e| panic!("Page.captureScreenshot answered bad base64: {e}"));
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// From now on, accepts every JavaScript dialog: `confirm()` returns `true`, `prompt()`
    /// its default text.
    pub fn auto_confirm(&self) {
        self.connection.borrow_mut().events.accept_dialogs = true;
    }

    /// The console errors (`console.error`, `console.assert` failures) and uncaught
    /// exceptions (rejections included) the page has reported so far, oldest first.
    pub fn console_errors(&self) -> Vec<String> {
        self.sync();
        self.connection.borrow().events.console_errors.clone()
    }

    /// The dialogs the page has shown so far, oldest first, as `"confirm: Delete it?"`.
    pub fn dialogs(&self) -> Vec<String> {
        self.sync();
        self.connection.borrow().events.dialogs.clone()
    }

    /// Evaluates `js`; `Err` holds the text of the exception it threw.
    fn try_eval(&self, js: &str) -> Result<Value, String> {
        let mut result = self.connection.borrow_mut().call(
            "Runtime.evaluate",
            json!({
                "expression": js,
                "returnByValue": true,
                "awaitPromise": true,
                "userGesture": true,
            }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            return Err(describe_exception(details));
        }
        let result = result["result"].take();
        Ok(match result.get("unserializableValue") {
            Some(special) => special.clone(),
            None => result.get("value").cloned().unwrap_or(Value::Null),
        })
    }

    /// One round trip, so the events the page sent before it have been handled.
    fn sync(&self) {
        let _ = self.try_eval("0");
    }

    /// The page's address and (the start of) its text, for failure messages.
    fn describe(&self) -> String {
        let page = self
            .try_eval("[location.href, document.body ? document.body.innerText : '(no body)']")
            .unwrap_or_else(|e| json!(["?", format!("(cannot read the page: {e})")]));
        let url = page[0].as_str().unwrap_or("?");
        let text = page[1].as_str().unwrap_or("").trim();
        let shown: String = text.chars().take(PAGE_TEXT_LIMIT).collect();
        let cut = if shown.len() < text.len() {
            "\n[…cut]"
        } else {
            ""
        };
        format!("--- text of {url} ---\n{shown}{cut}\n---")
    }

    fn missing(&self, action: &str, selector: &str) -> ! {
        panic!(
            "{action}: no element matches `{selector}`\n{}",
            self.describe()
        )
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self
            .connection
            .get_mut()
            .request("Page.close", json!({}), Duration::from_secs(2));
    }
}

/// `value` as a JavaScript string literal.
fn js_string(value: &str) -> String {
    Value::String(value.to_owned()).to_string()
}

/// The text of a CDP `ExceptionDetails`.
fn describe_exception(details: &Value) -> String {
    let exception = &details["exception"];
    if let Some(description) = exception.get("description").and_then(Value::as_str) {
        return description.to_owned();
    }
    if let Some(value) = exception.get("value") {
        return format!("{} {value}", details["text"].as_str().unwrap_or("Uncaught"));
    }
    details["text"]
        .as_str()
        .unwrap_or("an exception")
        .to_owned()
}

fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DURACTOR_CHROMIUM") {
        return Some(path.into());
    }
    let usual = Path::new("/usr/bin/chromium");
    if usual.is_file() {
        return Some(usual.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// What a connection has seen of its target's events.
#[derive(Default)]
struct Events {
    /// `Page.loadEventFired` events so far.
    loads: u64,
    console_errors: Vec<String>,
    dialogs: Vec<String>,
    accept_dialogs: bool,
    /// Why the target is gone (crashed, closed), once it is.
    gone: Option<String>,
}

/// Why a request failed.
enum Failure {
    /// The target answered with an error.
    Cdp(String),
    /// No answer in time.
    Timeout(Duration),
    /// The connection or the target is gone.
    Closed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Cdp(message) => write!(f, "{message}"),
            Failure::Timeout(timeout) => write!(f, "no answer within {timeout:?}"),
            Failure::Closed(reason) => write!(f, "the connection is gone: {reason}"),
        }
    }
}

/// A CDP websocket connection (to the browser, or to one page).
struct Connection {
    socket: WebSocket<TcpStream>,
    /// "browser" or "page", for messages.
    what: String,
    next_id: u64,
    events: Events,
}

impl Connection {
    fn connect(url: &str, what: String) -> Connection {
        let address = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("not a ws:// address: {url}"));
        let stream = TcpStream::connect(address)
            .unwrap_or_else(|e| panic!("cannot connect to DevTools at {address}: {e}"));
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(COMMAND_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(COMMAND_TIMEOUT)))
            .expect("set socket timeouts");
        // Screenshots come as one big message.
        let config = WebSocketConfig::default()
            .max_message_size(Some(1 << 30))
            .max_frame_size(Some(1 << 30));
        let (socket, _) = tungstenite::client::client_with_config(url, stream, Some(config))
            .unwrap_or_else(|e| panic!("websocket handshake with {url} failed: {e}"));
        Connection {
            socket,
            what,
            next_id: 0,
            events: Events::default(),
        }
    }

    /// Sends a command and waits (at most 30 s) for its result; panics naming the method
    /// when it fails or no answer comes.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.request(method, params, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("CDP {method} ({}): {e}", self.what))
    }

    fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let id = self.send(method, params)?;
        let deadline = Instant::now() + timeout;
        loop {
            let Some(mut message) = self.read(deadline)? else {
                return Err(Failure::Timeout(timeout));
            };
            if message.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(error) = message.get("error") {
                    return Err(Failure::Cdp(
                        error["message"].as_str().unwrap_or("error").to_owned()
                            + &error
                                .get("data")
                                .map(|data| format!(" ({data})"))
                                .unwrap_or_default(),
                    ));
                }
                return Ok(message["result"].take());
            }
            self.dispatch(message)?;
        }
    }

    /// Handles events until `done` holds (`Ok(true)`) or `deadline` passes (`Ok(false)`).
    fn wait_event(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Events) -> bool,
    ) -> Result<bool, Failure> {
        while !done(&self.events) {
            match self.read(deadline)? {
                Some(message) => self.dispatch(message)?,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    fn send(&mut self, method: &str, params: Value) -> Result<u64, Failure> {
        if let Some(reason) = &self.events.gone {
            return Err(Failure::Closed(reason.clone()));
        }
        self.next_id += 1;
        let id = self.next_id;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket
            .send(Message::text(text))
            .map_err(|e| Failure::Closed(e.to_string()))?;
        Ok(id)
    }

    /// The next message, or `None` once `deadline` has passed.
    fn read(&mut self, deadline: Instant) -> Result<Option<Value>, Failure> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.socket
                .get_mut()
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| Failure::Closed(e.to_string()))?;
            match self.socket.read() {
                Ok(Message::Text(text)) => {
                    return serde_json::from_str(&text)
                        .map(Some)
                        .map_err(|e| Failure::Closed(format!("unreadable message ({e}): {text}")));
                }
                Ok(Message::Close(frame)) => {
                    return Err(Failure::Closed(format!(
                        "closed by the browser ({frame:?})"
                    )));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(Failure::Closed(e.to_string())),
            }
        }
    }

    /// Handles an event (or the answer to a command nobody waits for, which is dropped).
    fn dispatch(&mut self, message: Value) -> Result<(), Failure> {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return Ok(());
        };
        let params = &message["params"];
        match method {
            "Page.loadEventFired" => self.events.loads += 1,
            "Page.javascriptDialogOpening" => {
                let kind = params["type"].as_str().unwrap_or("dialog");
                self.events.dialogs.push(format!(
                    "{kind}: {}",
                    params["message"].as_str().unwrap_or("")
                ));
                let accept = self.events.accept_dialogs;
                let mut answer = json!({ "accept": accept });
                if accept && let Some(text) = params.get("defaultPrompt") {
                    answer["promptText"] = text.clone();
                }
                // Its answer comes later and is dropped; the command that waits goes on.
                self.send("Page.handleJavaScriptDialog", answer)?;
            }
            "Runtime.consoleAPICalled"
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|arg| match (&arg["value"], arg.get("description")) {
                        (Value::String(text), _) => text.clone(),
                        (Value::Null, Some(Value::String(description))) => description.clone(),
                        (value, _) => value.to_string(),
                    })
                    .collect();
                self.events.console_errors.push(format!(
                    "console.{}: {}",
                    params["type"].as_str().unwrap_or("error"),
                    args.join(" ")
                ));
            }
            "Runtime.exceptionThrown" => {
                let details = &params["exceptionDetails"];
                let mut text = describe_exception(details);
                if !text.starts_with("Uncaught") {
                    text = format!("{} {text}", details["text"].as_str().unwrap_or("Uncaught"));
                }
                // A stack names the place already.
                if let Some(url) = details.get("url").and_then(Value::as_str)
                    && !text.contains('\n')
                {
                    text += &format!(
                        " (at {url}:{}:{})",
                        details["lineNumber"].as_u64().unwrap_or(0) + 1,
                        details["columnNumber"].as_u64().unwrap_or(0) + 1
                    );
                }
                self.events.console_errors.push(text);
            }
            "Inspector.targetCrashed" => self.events.gone = Some("the page crashed".to_owned()),
            "Inspector.detached" => {
                self.events.gone = Some(format!(
                    "detached: {}",
                    params["reason"].as_str().unwrap_or("?")
                ))
            }
            _ => {}
        }
        Ok(())
    }
}
