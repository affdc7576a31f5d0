//! What tests ask of the running software, shared by the test crates: a docker command's output (a failure is a
//! panic with docker's message), a page over plain HTTP on loopback, the PHP modules the matrix promises (and the
//! check that a page lists them), and the PHP page that shows them and keeps rows in MariaDB.

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

/// A PHP page that prints PHP's version (`PHP_VERSION 8.2.…`) and its loaded extensions (`extensions a,b,…`),
/// writes the `token` query parameter as a row over PDO to MariaDB at `mariadb` with these credentials, reads it
/// back (`read back TOKEN`) and counts the table's rows (`rows N`); then runs `more_php`, further statements.
pub fn visits_page(database: &str, user: &str, password: &str, more_php: &str) -> String {
    format!(
        r#"<?php
header('Content-Type: text/plain');
echo 'PHP_VERSION ', PHP_VERSION, "\n";
$extensions = get_loaded_extensions();
sort($extensions);
echo 'extensions ', implode(',', $extensions), "\n";
$pdo = new PDO('mysql:host=mariadb;dbname=' . {database} . ';charset=utf8mb4', {user}, {password},
    [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$pdo->exec('CREATE TABLE IF NOT EXISTS visits (id INT AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL)');
$pdo->prepare('INSERT INTO visits (token) VALUES (?)')->execute([$_GET['token'] ?? '']);
$select = $pdo->prepare('SELECT token FROM visits WHERE id = ?');
$select->execute([$pdo->lastInsertId()]);
echo 'read back ', $select->fetchColumn(), "\n";
echo 'rows ', $pdo->query('SELECT COUNT(*) FROM visits')->fetchColumn(), "\n";
{more_php}"#,
        database = php_string(database),
        user = php_string(user),
        password = php_string(password),
    )
}

/// A string literal of PHP that holds exactly `text`.
fn php_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', r"\\").replace('\'', r"\'"))
}

/// Asserts that the `extensions` line of a [`visits_page`] names every promised module; shows the whole page
/// when one is missing.
#[track_caller]
pub fn assert_promised_modules(page: &str) {
    let loaded: Vec<&str> = page
        .lines()
        .find_map(|l| l.strip_prefix("extensions "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, literal: &str) {
        assert_eq!(php_string(text), literal);
    }

    #[test]
    fn a_php_string_literal_holds_exactly_the_text() {
        check("site", "'site'");
        check("it's", r"'it\'s'");
        check(r"a\b", r"'a\\b'");
        check(r#"pa$$ 'w"o\rd"#, r#"'pa$$ \'w"o\\rd'"#);
        check(r"\'", r"'\\\''");
    }
}
