//! Mail over SMTP, enough for alerts: `smtp://user:password@host:587`
//! upgrades with STARTTLS (required, unless the server is on this
//! machine's loopback), `smtps://host:465` speaks TLS from the first byte;
//! AUTH PLAIN only ever inside TLS or on loopback. Certificates are checked
//! against the system's roots (SSL_CERT_FILE names others).
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The parts of an `smtp://` or `smtps://` URL.
#[derive(Debug, PartialEq)]
struct Server {
    implicit_tls: bool,
    host: String,
    port: u16,
    user: Option<String>,
    password: Option<String>,
}

fn parse(url: &str) -> Result<Server, String> {
    let (implicit_tls, rest) = match url.split_once("://") {
        Some(("smtp", r)) => (false, r),
        Some(("smtps", r)) => (true, r),
        _ => return Err("not an smtp:// or smtps:// URL".into()),
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (user, password) = match userinfo {
        Some(u) => {
            let (a, b) = u.split_once(':').unwrap_or((u, ""));
            (Some(kura_store::percent_decode(a)), Some(kura_store::percent_decode(b)))
        }
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().map_err(|_| format!("{p:?} is not a port"))?),
        None => (hostport.to_string(), if implicit_tls { 465 } else { 587 }),
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    Ok(Server { implicit_tls, host: host.trim_matches(['[', ']']).to_string(), port, user, password })
}

struct Session<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// One reply: its code and its lines' texts.
    async fn reply(&mut self) -> Result<(u16, Vec<String>), String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n =
                self.io.read_line(&mut line).await.map_err(|e| format!("reading from the server: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            let line = line.trim_end();
            let code: u16 =
                line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not SMTP: {line:?}"))?;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
        }
    }

    async fn command(&mut self, line: &str, want: u16, shown: &str) -> Result<Vec<String>, String> {
        let w = self.io.get_mut();
        w.write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("writing to the server: {e}"))?;
        w.flush().await.map_err(|e| e.to_string())?;
        let (code, text) = self.reply().await?;
        if code / 100 != want / 100 {
            return Err(format!("{shown}: the server answered {code} {}", text.join(" ")));
        }
        Ok(text)
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

fn loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The message, with headers, lines ending CRLF and leading dots doubled.
fn message(from: &str, to: &[String], subject: &str, body: &str) -> String {
    let subject: String = subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let encoded = if subject.is_ascii() {
        subject
    } else {
        use base64::Engine;
        format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(subject.as_bytes()))
    };
    let mut m = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {encoded}\r\nDate: {}\r\nMessage-ID: <{}.{}@kura>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        to.join(", "),
        chrono::Utc::now().to_rfc2822(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default(),
        std::process::id()
    );
    for line in body.lines() {
        if line.starts_with('.') {
            m.push('.');
        }
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.push('.');
    m
}

/// What is sent, to whom.
struct Letter<'a> {
    from: &'a str,
    to: &'a [String],
    subject: &'a str,
    body: &'a str,
}

async fn mail<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session<S>,
    server: &Server,
    secure: bool,
    caps: &[String],
    letter: &Letter<'_>,
) -> Result<(), String> {
    let Letter { from, to, subject, body } = *letter;
    if let (Some(user), Some(password)) = (&server.user, &server.password) {
        if !secure && !loopback(&server.host) {
            return Err("refusing to send the password without TLS".into());
        }
        if !caps.iter().any(|c| c.to_ascii_uppercase().starts_with("AUTH")) {
            return Err("the server offers no AUTH, but a user is set".into());
        }
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        s.command(&format!("AUTH PLAIN {token}"), 235, "AUTH").await?;
    }
    s.command(&format!("MAIL FROM:<{from}>"), 250, "MAIL FROM").await?;
    for rcpt in to {
        s.command(&format!("RCPT TO:<{rcpt}>"), 250, &format!("RCPT TO {rcpt}")).await?;
    }
    s.command("DATA", 354, "DATA").await?;
    s.command(&message(from, to, subject, body), 250, "the message").await?;
    let _ = s.command("QUIT", 221, "QUIT").await;
    Ok(())
}

pub async fn send(url: &str, from: &str, to: &[String], subject: &str, body: &str) -> Result<(), String> {
    let server = parse(url).map_err(|e| format!("smtp: {e}"))?;
    let at = format!("{}:{}", server.host, server.port);
    let letter = Letter { from, to, subject, body };
    let work = async {
        let tcp = TcpStream::connect((server.host.as_str(), server.port)).await.map_err(|e| e.to_string())?;
        let name = rustls::pki_types::ServerName::try_from(server.host.clone()).map_err(|e| e.to_string())?;
        if server.implicit_tls {
            let tls = tls_connector()?.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            let mut s = Session { io: BufReader::new(tls) };
            s.reply().await?;
            let caps = s.command("EHLO kura", 250, "EHLO").await?;
            return mail(&mut s, &server, true, &caps, &letter).await;
        }
        let mut s = Session { io: BufReader::new(tcp) };
        s.reply().await?;
        let caps = s.command("EHLO kura", 250, "EHLO").await?;
        if caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
            s.command("STARTTLS", 220, "STARTTLS").await?;
            let tcp = s.io.into_inner();
            let tls = tls_connector()?.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            let mut s = Session { io: BufReader::new(tls) };
            let caps = s.command("EHLO kura", 250, "EHLO").await?;
            return mail(&mut s, &server, true, &caps, &letter).await;
        }
        if !loopback(&server.host) {
            return Err("the server does not offer STARTTLS; use smtps:// or a server that does".into());
        }
        mail(&mut s, &server, false, &caps, &letter).await
    };
    match tokio::time::timeout(Duration::from_secs(60), work).await {
        Ok(r) => r.map_err(|e| format!("mail via {at}: {e}")),
        Err(_) => Err(format!("mail via {at}: timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_tls_mode_port_and_credentials() {
        let s = parse("smtp://ops%40example.org:p%3Ass@mail.example.org").unwrap();
        assert_eq!(
            s,
            Server {
                implicit_tls: false,
                host: "mail.example.org".into(),
                port: 587,
                user: Some("ops@example.org".into()),
                password: Some("p:ss".into())
            }
        );
        assert_eq!(parse("smtps://mail:2465").unwrap().port, 2465);
        assert!(parse("smtps://mail").unwrap().implicit_tls);
        assert!(parse("http://x").is_err());
    }

    #[test]
    fn a_body_line_starting_with_a_dot_is_doubled() {
        let m = message("a@x", &["b@y".into()], "hi", "one\n.two\n");
        assert!(m.contains("\r\none\r\n..two\r\n."), "{m}");
    }
}
