//! The headless-Chromium driver of `duractor_tests::browser`, against pages served by a tiny
//! HTTP server of the test's own.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use duractor_tests::TempDir;
use duractor_tests::browser::{Browser, Page};
use serde_json::json;

const MAIN: &str = r#"<!doctype html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>driver test</title>
<style>
  body { font-family: sans-serif; margin: 16px; }
  .tall { height: 1600px; background: linear-gradient(#fff, #48f); }
</style>
</head>
<body>
<h1 id="title">Hello from the test server</h1>
<p id="status">loading</p>
<label>Name <input id="name"></label>
<p id="echo"></p>
<button id="greet">Greet</button>
<button id="delete">Delete</button>
<p id="result"></p>
<div class="tall"></div>
<button id="bottom">Bottom</button>
<p id="bottom-result"></p>
<script>
  setTimeout(() => { document.getElementById('status').textContent = 'ready'; }, 150);
  const name = document.getElementById('name');
  window.changes = 0;
  name.addEventListener('input', () => {
    document.getElementById('echo').textContent = 'typed: ' + name.value;
  });
  name.addEventListener('change', () => { window.changes += 1; });
  document.getElementById('greet').addEventListener('click', () => {
    document.getElementById('result').textContent = 'Hello, ' + name.value + '!';
  });
  document.getElementById('delete').addEventListener('click', () => {
    document.getElementById('result').textContent = confirm('Delete it?') ? 'deleted' : 'kept';
  });
  document.getElementById('bottom').addEventListener('click', () => {
    document.getElementById('bottom-result').textContent = 'clicked at scrollY ' + window.scrollY;
  });
  window.addEventListener('hashchange', () => { window.routed = location.hash; });
</script>
</body>
</html>
"#;

const THROWS: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>throws</title></head>
<body>
<p>A page with errors</p>
<script>
  console.log('fine');
  console.error('bad thing', 42);
  Promise.reject(new Error('nobody caught this'));
  setTimeout(() => { throw new Error('kaboom'); }, 20);
  setTimeout(() => { document.title = 'done'; }, 60);
</script>
</body></html>
"#;

/// Serves [`MAIN`] at `/`, [`THROWS`] at `/throws`, 404 elsewhere, for as long as the test
/// process runs; returns `http://127.0.0.1:PORT`.
fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the test server");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                // The rest of the head; these requests have no body.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or(target);
                let (status, body) = match path {
                    "/" => ("200 OK", MAIN),
                    "/throws" => ("200 OK", THROWS),
                    _ => ("404 Not Found", "not found"),
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    base
}

/// The message of a panic caught from `f`.
fn panic_message(f: impl FnOnce()) -> String {
    let payload = catch_unwind(AssertUnwindSafe(f)).expect_err("it should have panicked");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(png: &[u8]) -> (u32, u32) {
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

fn wait_ready(page: &Page) {
    page.wait_for(
        "document.getElementById('status').textContent === 'ready'",
        Duration::from_secs(5),
    );
}

#[test]
fn drives_a_page() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let started = Instant::now();
    let base = serve();
    let page = browser.open(&format!("{base}/#/start"));

    // Waiting for what a timer changes, then reading the DOM.
    assert_eq!(
        page.wait_for(
            "document.getElementById('status').textContent === 'ready' && 'yes'",
            Duration::from_secs(5)
        ),
        json!("yes")
    );
    assert_eq!(page.text("#title"), "Hello from the test server");
    assert_eq!(
        page.wait_for("document.querySelector('#greet')", Duration::from_secs(1)),
        json!(true)
    );

    // eval: values, promises, undefined, exceptions.
    assert_eq!(page.eval("1 + 2"), json!(3));
    assert_eq!(
        page.eval("new Promise(r => setTimeout(() => r({ a: [1, 'x'], b: null }), 10))"),
        json!({ "a": [1, "x"], "b": null })
    );
    assert_eq!(page.eval("undefined"), json!(null));
    let thrown = panic_message(|| {
        page.eval("(() => { throw new Error('boom in eval'); })()");
    });
    assert!(thrown.contains("boom in eval"), "{thrown}");
    let rejected = panic_message(|| {
        page.eval("Promise.reject(new TypeError('rejected in eval'))");
    });
    assert!(
        rejected.contains("TypeError: rejected in eval"),
        "{rejected}"
    );

    // fill dispatches input and change; click runs the handlers.
    page.fill("#name", "Ada");
    assert_eq!(page.text("#echo"), "typed: Ada");
    assert_eq!(page.eval("window.changes"), json!(1));
    assert_eq!(page.eval("document.activeElement.id"), json!("name"));
    page.click("#greet");
    assert_eq!(page.text("#result"), "Hello, Ada!");

    // Dialogs: dismissed by default, accepted after auto_confirm, listed either way.
    page.click("#delete");
    assert_eq!(page.text("#result"), "kept");
    page.auto_confirm();
    page.click("#delete");
    assert_eq!(page.text("#result"), "deleted");
    assert_eq!(
        page.dialogs(),
        ["confirm: Delete it?", "confirm: Delete it?"]
    );
    assert_eq!(page.eval("prompt('Name?', 'Bob')"), json!("Bob"));

    // Failures name what is missing, and show the page.
    let missing = panic_message(|| page.click("#no-such-button"));
    assert!(missing.contains("#no-such-button"), "{missing}");
    assert!(missing.contains("Hello from the test server"), "{missing}");
    let missing = panic_message(|| {
        page.text(".nothing");
    });
    assert!(missing.contains(".nothing"), "{missing}");
    let missing = panic_message(|| page.fill("#title", "x"));
    assert!(missing.contains("not a form field but a <h1>"), "{missing}");
    let timed_out = panic_message(|| {
        page.wait_for(
            "document.querySelector('.never').id",
            Duration::from_millis(200),
        );
    });
    assert!(
        timed_out.contains("waiting for `document.querySelector('.never').id`"),
        "{timed_out}"
    );
    assert!(timed_out.contains("TypeError"), "{timed_out}");
    assert!(
        timed_out.contains("Hello from the test server"),
        "{timed_out}"
    );

    // The page's own routes: a change of the fragment alone, like the dashboard's.
    page.goto(&format!("{base}/#/instances?status=Running"));
    assert_eq!(
        page.eval("location.hash"),
        json!("#/instances?status=Running")
    );
    page.wait_for(
        "window.routed === '#/instances?status=Running'",
        Duration::from_secs(2),
    );
    assert_eq!(page.text("#result"), "deleted", "the same document");
    // A full navigation waits for the new document.
    page.goto(&format!("{base}/?again"));
    assert_eq!(page.text("#result"), "");
    wait_ready(&page);

    // The window size, then a phone's.
    assert_eq!(page.eval("[innerWidth, innerHeight]"), json!([1280, 900]));
    page.set_viewport(390, 844, true);
    assert_eq!(page.eval("innerWidth"), json!(390));
    assert_eq!(
        page.eval("matchMedia('(max-width: 600px)').matches"),
        json!(true)
    );

    // click scrolls what it clicks into view.
    page.click("#bottom");
    assert!(page.eval("window.scrollY").as_f64().unwrap_or(0.0) > 500.0);
    assert!(
        page.text("#bottom-result")
            .starts_with("clicked at scrollY")
    );

    // A full-page screenshot: as wide as the viewport, as tall as the page.
    let dir = TempDir::new("browser-screenshot");
    let path = dir.file("shots/phone.png");
    page.screenshot(&path);
    let png = std::fs::read(&path).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 1024, "only {} bytes", png.len());
    let (width, height) = png_size(&png);
    assert_eq!(width, 390);
    assert!(height > 1600, "{height} px: not the whole page");

    assert_eq!(page.console_errors(), Vec::<String>::new());
    eprintln!("drives_a_page: {:?} after launch", started.elapsed());
}

#[test]
fn reports_console_errors_and_uncaught_exceptions() {
    let Some(browser) = Browser::launch() else {
        return;
    };
    let base = serve();
    let page = browser.open(&format!("{base}/throws"));
    page.wait_for("document.title === 'done'", Duration::from_secs(5));
    let errors = page.console_errors();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(errors[0], "console.error: bad thing 42");
    // The rejection is reported after the script's microtasks, the throw after its timer.
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Uncaught (in promise) Error: nobody caught this")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("Uncaught Error: kaboom")),
        "{errors:#?}"
    );

    // A second tab of the same browser is a page of its own.
    let other = browser.open(&format!("{base}/"));
    wait_ready(&other);
    assert_eq!(other.console_errors(), Vec::<String>::new());
    assert_eq!(page.console_errors().len(), 3);

    // A server that is not there is a readable failure.
    let closed = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let refused = panic_message(|| {
        page.goto(&format!("http://{closed}/"));
    });
    assert!(refused.contains("ERR_CONNECTION_REFUSED"), "{refused}");
}
