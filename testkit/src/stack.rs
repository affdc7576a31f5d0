//! Stand-ins for the stack's services, for tests that start the whole stack: nginx, MariaDB, phpMyAdmin and the
//! PHP-FPM image cannot be pulled here, so each is replaced by a small busybox image built on this machine, named
//! `…-standin`, selected through the same variables users have (NGINX_IMAGE, MARIADB_IMAGE, PMA_IMAGE, and the
//! PHP-FPM image by registry or build context). Each answers the health check the stack expects of it.
//!
//! busybox httpd as PID 1 ignores SIGTERM, so every stand-in stops on SIGKILL (`STOPSIGNAL`): otherwise each
//! `stop` and `down` would wait out docker's 10 s grace period.

use std::{net::TcpListener, path::Path, sync::OnceLock};

use anyhow::Context;
use stack_images::docker::{Docker, DockerCommand};

use crate::fixtures;

/// Where the service stand-ins are tagged in the local image store (never pushed).
pub const NGINX_STANDIN: &str = "20i-test/fixtures/nginx-standin:2";
pub const MARIADB_STANDIN: &str = "20i-test/fixtures/mariadb-standin:2";
pub const PHPMYADMIN_STANDIN: &str = "20i-test/fixtures/phpmyadmin-standin:2";

/// nginx: busybox httpd on port 80 answering the compose health check's `/20i-health`.
const NGINX_LINES: &str = "\
RUN mkdir -p /www && echo ok > /www/20i-health && echo nginx-standin > /www/index.html
STOPSIGNAL SIGKILL
CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
";

/// MariaDB: something listening on 3306, and the `healthcheck.sh` the official image ships.
const MARIADB_LINES: &str = "\
RUN mkdir -p /www /usr/local/bin && echo mariadb-standin > /www/index.html \
 && printf '#!/bin/sh\\nexec wget -q -O /dev/null http://127.0.0.1:3306/\\n' > /usr/local/bin/healthcheck.sh \
 && chmod 0755 /usr/local/bin/healthcheck.sh
ENV PATH=/usr/local/bin:/bin
STOPSIGNAL SIGKILL
CMD [\"httpd\", \"-f\", \"-p\", \"3306\", \"-h\", \"/www\"]
";

/// phpMyAdmin: a web server on port 80.
const PHPMYADMIN_LINES: &str = "\
RUN mkdir -p /www && echo phpmyadmin-standin > /www/index.html
STOPSIGNAL SIGKILL
CMD [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
";

/// The PHP-FPM stand-in's Dockerfile lines (after the busybox fixture's): listens on 9000, healthy through its
/// own HEALTHCHECK like the real image, works in /var/www/site, and records the PHP_VERSION build argument.
pub const PHP_FPM_STANDIN_LINES: &str = "\
ARG PHP_VERSION=8.5
LABEL io.20i-stack.standin=php-fpm
RUN mkdir -p /standin /var/www/site && echo ok > /standin/health && echo \"$PHP_VERSION\" > /standin/php-version
WORKDIR /var/www/site
EXPOSE 9000
STOPSIGNAL SIGKILL
HEALTHCHECK --interval=1s --timeout=3s --start-period=20s --retries=3 \
  CMD [\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1:9000/health\"]
CMD [\"httpd\", \"-f\", \"-p\", \"9000\", \"-h\", \"/standin\"]
";

/// Builds the service stand-ins into the local image store, once per test process.
pub fn service_standins() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_standins().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_standins() -> anyhow::Result<()> {
    let docker = Docker::new()?;
    for (tag, lines) in [
        (NGINX_STANDIN, NGINX_LINES),
        (MARIADB_STANDIN, MARIADB_LINES),
        (PHPMYADMIN_STANDIN, PHPMYADMIN_LINES),
    ] {
        let context = fixtures::busybox_context(lines)?;
        let dir = context.path().display().to_string();
        docker
            .output(&DockerCommand::new([
                "build", "--quiet", "--tag", tag, &dir,
            ]))
            .with_context(|| format!("building {tag}"))?;
    }
    Ok(())
}

/// Writes a PHP-FPM stand-in build context (Dockerfile and busybox binaries) into `dir`.
pub fn write_php_fpm_standin_context(dir: &Path) -> anyhow::Result<()> {
    let made = fixtures::busybox_context(PHP_FPM_STANDIN_LINES)?;
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(made.path())? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (free when asked; the OS does not hand it out again right away).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` distinct free ports: every listener is held until all are bound, so no port is handed out twice (one at a
/// time, the same port can come back, and the launcher refuses two services on one port).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
