//! The launcher's handle on docker: every invocation goes through [`stack_images::docker::Docker`], and the time
//! spent waiting for docker is added up, so `20i start` can say how small its own share of the total is.

use std::{
    cell::Cell,
    time::{Duration, Instant},
};

use stack_images::{
    docker::{Bounds, Docker, DockerCommand, DockerError},
    engine_api::Report,
};

pub struct Engine {
    docker: Docker,
    in_docker: Cell<Duration>,
}

impl Engine {
    pub fn new() -> anyhow::Result<Engine> {
        Ok(Engine {
            docker: Docker::new()?,
            in_docker: Cell::new(Duration::ZERO),
        })
    }

    fn timed<T>(&self, work: impl FnOnce(&Docker) -> T) -> T {
        let started = Instant::now();
        let result = work(&self.docker);
        self.in_docker.set(self.in_docker.get() + started.elapsed());
        result
    }

    pub fn output(&self, command: &DockerCommand) -> Result<Vec<u8>, DockerError> {
        self.timed(|d| d.output(command))
    }

    pub fn output_with_env(
        &self,
        command: &DockerCommand,
        env: &[(String, String)],
    ) -> Result<Vec<u8>, DockerError> {
        self.timed(|d| d.output_with_env(command, env))
    }

    /// Pulls with progress in bytes ([`Docker::pull`]: the engine's API, or the CLI watched).
    pub fn pull(
        &self,
        reference: &str,
        bounds: Bounds,
        on_report: &mut dyn FnMut(Report<'_>),
    ) -> Result<(), DockerError> {
        self.timed(|d| d.pull(reference, bounds, on_report))
    }

    pub fn run_attached(
        &self,
        command: &DockerCommand,
        env: &[(String, String)],
    ) -> Result<(), DockerError> {
        self.timed(|d| d.run_attached(command, env))
    }

    /// Counts `took` as time in docker: the other images' pulls, run on their own handles alongside this one's.
    pub fn add_docker_time(&self, took: Duration) {
        self.in_docker.set(self.in_docker.get() + took);
    }

    /// Time spent in docker commands so far.
    pub fn docker_time(&self) -> Duration {
        self.in_docker.get()
    }
}

/// `1.23 s` or `45 ms`: how step times are printed.
pub fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.2} s", duration.as_secs_f64())
    }
}
