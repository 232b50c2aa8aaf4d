//! A target's `pre_restore` / `post_restore` commands, run under `sh -c`.
//! Every line they print becomes an [`Event::Hook`]; the last ones are
//! quoted in the error if the hook fails.
use std::collections::VecDeque;
use std::io::BufRead;
use std::sync::Mutex;

use crate::event::{Event, Sink};
use crate::RunError;

pub fn run(sink: &dyn Sink, hook: &'static str, command: &str) -> Result<(), RunError> {
    let failed = |status: String, tail: Vec<String>| RunError::Hook {
        hook,
        command: command.to_string(),
        status,
        tail,
    };
    sink.event(Event::Hook { hook, command: command.to_string(), line: None });
    let mut child = std::process::Command::new("sh")
        .args(["-c", command])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("it could not start: {e}"), Vec::new()))?;
    let (out, err) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let tail = Mutex::new(VecDeque::new());
    let relay = |r: Box<dyn std::io::Read + Send>| {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            sink.event(Event::Hook { hook, command: command.to_string(), line: Some(line.clone()) });
            let mut t = tail.lock().expect("tail lock");
            t.push_back(line);
            if t.len() > 10 {
                t.pop_front();
            }
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| relay(Box::new(out)));
        s.spawn(|| relay(Box::new(err)));
    });
    let status = child.wait().map_err(|e| failed(e.to_string(), Vec::new()))?;
    if !status.success() {
        return Err(failed(status.to_string(), tail.into_inner().expect("tail lock").into()));
    }
    Ok(())
}
