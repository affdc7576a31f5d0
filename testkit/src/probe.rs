//! What tests ask of the running software, shared by the test crates: a docker command's output (a failure is a
//! panic with docker's message), a page over plain HTTP on loopback, and the PHP modules the matrix promises (and
//! the check that a page lists them).

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use stack_images::docker::{Docker, DockerCommand};

/// What `images/matrix.toml`'s description promises, as `php -m` and `get_loaded_extensions()` name them.
pub const PROMISED_MODULES: [&str; 9] = [
    "bcmath",
    "curl",
    "exif",
    "gd",
    "mbstring",
    "mysqli",
    "pdo_mysql",
    "zip",
    "Zend OPcache",
];

/// Asserts that the line of `page` after `label` (PHP's `implode(',', get_loaded_extensions())`) names every
/// promised module; shows the whole page when one is missing.
#[track_caller]
pub fn assert_promised_modules(page: &str, label: &str) {
    let loaded: Vec<&str> = page
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_default()
        .split(',')
        .collect();
    for module in PROMISED_MODULES {
        assert!(loaded.contains(&module), "no {module}: {page}");
    }
}

/// Runs docker and returns its output, panicking with docker's message on failure.
#[track_caller]
pub fn docker(args: &[&str]) -> String {
    let out = Docker::new()
        .unwrap()
        .output(&DockerCommand::new(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8(out).unwrap()
}

/// The body of a plain HTTP GET on loopback, or the whole response (or the error) when it is not a 200.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ => Err(response),
    }
}
