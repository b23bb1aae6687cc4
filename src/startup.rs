//! Starting each mode from a loaded configuration.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{AppState, Application, HoldExpiry, WalletDirectory, WorkerProbe};
use crate::auth::{self, Scope, TokenRegistry};
use crate::bench::{BenchOptions, Report};
use crate::cache::{Cache, Decisions};
use crate::cli::TokenCommand;
use crate::config::Config;
use crate::ingest::broker::TopicCreation;
use crate::ingest::health::WorkerHealth;
use crate::ingest::producer::OperationProducer;
use crate::ingest::{backoff, broker, lag, layout, resume, worker};
use crate::ledger::metadata::MetadataLimits;
use crate::ledger::{audit, database, migrate as schema};

/// How long `serve`, `work` and `run` wait at start for PostgreSQL to answer.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `wallet migrate`: the schema, then the topics. Every step is bounded in time.
pub fn migrate(config: Config) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let deadline = config.database.connect_timeout() * 2;
        let mut client =
            tokio::time::timeout(deadline, database::connect_creating(&config.database))
                .await
                .with_context(|| {
                    format!(
                        "PostgreSQL at {} did not answer within {deadline:?}",
                        database::redact(&config.database.url)
                    )
                })??;
        let applied = schema::apply(&mut client).await?;
        let kafka = &config.kafka;
        let broker = broker::connect(kafka).await?;
        let partitions = ready_topic(&broker, kafka, &kafka.operations_topic).await?;
        let pool = database::pool(&config.database)?;
        let pooled = database::client(&pool)
            .await
            .map_err(|error| anyhow::anyhow!(error.describe()))?;
        layout::record(&pooled, &kafka.operations_topic, partitions).await?;
        ready_topic(&broker, kafka, &kafka.events_topic).await?;
        tracing::info!(applied, "migrations complete");
        println!(
            "migrate: {applied} migration(s) applied; topics {} and {} ready",
            kafka.operations_topic, kafka.events_topic
        );
        Ok(())
    })
}

/// Creates `topic` with `kafka.partitions` partitions and waits until the broker lists them
/// all; a topic that exists keeps the partitions it has (see the README on changing them).
/// Answers the topic's partition count.
async fn ready_topic(
    client: &rskafka::client::Client,
    kafka: &crate::config::KafkaConfig,
    topic: &str,
) -> anyhow::Result<i32> {
    match broker::ensure_topic(client, kafka, topic, kafka.partitions).await? {
        TopicCreation::Created => broker::await_topic(client, kafka, topic, kafka.partitions).await,
        TopicCreation::Existed => {
            let partitions = broker::await_topic(client, kafka, topic, 1).await?;
            tracing::info!(
                topic,
                partitions,
                configured = kafka.partitions,
                "topic exists; it keeps its partitions"
            );
            Ok(partitions)
        }
    }
}

/// `wallet serve`: runs until SIGINT or SIGTERM, then finishes in-flight requests.
pub fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init_metrics()?;
    runtime()?.block_on(async {
        let (pool, cache) = connect_stores(&config).await?;
        let application = build_api(&config, pool, cache, None).await?;
        drain_on(shutdown_on_signal(), &application);
        tracing::info!(port = application.port, "serving the API");
        application.server.await.context("HTTP server")
    })
}

/// `wallet work`: runs until SIGINT or SIGTERM, abandoning any uncommitted batch.
pub fn work(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init_metrics()?;
    runtime()?.block_on(async {
        let (pool, cache) = connect_worker_stores(&config).await?;
        let shutdown = shutdown_on_signal();
        let deadline = Duration::from_secs(config.worker.shutdown_timeout_s);
        let health = WorkerHealth::default();
        let endpoints = match config.worker.metrics_listen.as_str() {
            "" => None,
            listen => {
                let probe = WorkerProbe {
                    health: health.clone(),
                    pool: pool.clone(),
                    kafka: config.kafka.clone(),
                    deadline: Duration::from_millis(config.http.readiness_timeout_ms),
                };
                let server = crate::api::worker_endpoints(listen, probe)?;
                let handle = server.handle();
                tokio::spawn(server);
                Some(handle)
            }
        };
        let worker = tokio::spawn(worker::run(config, pool, cache, health, shutdown.clone()));
        let stopped = stop_within(worker, &shutdown, deadline).await;
        if let Some(endpoints) = endpoints {
            endpoints.stop(false).await;
        }
        stopped
    })
}

/// `wallet run`: the API and a worker in one process, sharing one PostgreSQL pool (so the
/// process holds at most `database.pool_size` connections) and one Redis connection. The pool
/// is the worker's: its session bounds only ever end work that holds locks or a transaction,
/// which no request does.
pub fn run(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init_metrics()?;
    runtime()?.block_on(async {
        let health = WorkerHealth::default();
        let (pool, cache) = connect_worker_stores(&config).await?;
        let application =
            build_api(&config, pool.clone(), cache.clone(), Some(health.clone())).await?;
        drain_on(shutdown_on_signal(), &application);
        // The worker stops once the server has: the requests it lets finish, `Prefer: wait`
        // above all, may still see their operations decided.
        let shutdown = CancellationToken::new();
        tracing::info!(
            port = application.port,
            "serving the API and applying operations"
        );
        let deadline = Duration::from_secs(config.worker.shutdown_timeout_s);
        let worker = tokio::spawn(worker::run(config, pool, cache, health, shutdown.clone()));
        let served = application.server.await.context("HTTP server");
        shutdown.cancel();
        stop_within(worker, &shutdown, deadline).await?;
        served
    })
}

/// `wallet bench`: runs each scenario in turn; fails when the ledger shows any violation.
pub fn bench(scenarios: Vec<BenchOptions>, json: bool) -> anyhow::Result<()> {
    let runtime = runtime()?;
    let mut reports = Vec::with_capacity(scenarios.len());
    for options in scenarios {
        reports.push(runtime.block_on(crate::bench::run(options))?);
    }
    match (json, reports.as_slice()) {
        (true, [report]) => println!("{}", serde_json::to_string_pretty(report)?),
        (true, _) => println!("{}", serde_json::to_string_pretty(&reports)?),
        (false, [report]) => report.print(),
        (false, _) => crate::bench::print_table(&reports),
    }
    let violations: u64 = reports.iter().map(Report::violation_count).sum();
    match violations {
        0 => Ok(()),
        count => anyhow::bail!("{count} correctness violation(s)"),
    }
}

/// Connects to PostgreSQL for an operator command, saying where it tried.
async fn operator_connection(config: &Config) -> anyhow::Result<tokio_postgres::Client> {
    database::connect(&config.database).await.with_context(|| {
        format!(
            "cannot reach PostgreSQL at {}",
            database::redact(&config.database.url)
        )
    })
}

/// A progress bar over `total` rows on a terminal's standard error; hidden elsewhere.
fn rows_bar(total: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying {bar:30} {pos}/{len} rows ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// `wallet verify`: the ledger audit plus every stored position against the broker; fails
/// (exit 1) when anything is wrong.
pub fn verify(config: Config, json: bool) -> anyhow::Result<()> {
    let audit = runtime()?.block_on(async {
        let mut client = operator_connection(&config).await?;
        let bar = rows_bar(audit::size(&client).await?);
        let mut audit = audit::run(&mut client, |rows| bar.inc(rows)).await?;
        bar.finish_and_clear();
        let kafka = broker::connect(&config.kafka).await?;
        let mut ends = std::collections::BTreeMap::new();
        for position in audit.positions.clone() {
            if !ends.contains_key(&position.topic) {
                // A topic the broker no longer has leaves every position on it unmatched.
                let topic_ends = lag::end_offsets(&kafka, &config.kafka, &position.topic).await;
                ends.insert(position.topic.clone(), topic_ends.unwrap_or_default());
            }
            let end = ends[&position.topic].get(&position.partition).copied();
            audit.record(audit::checks::check_position(
                &position.topic,
                position.partition,
                position.next_offset,
                end,
            ));
        }
        anyhow::Ok(audit)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&audit)?);
    } else {
        println!("{audit}");
    }
    match audit.violation_count {
        0 => Ok(()),
        count => anyhow::bail!("{count} violation(s) found"),
    }
}

/// `wallet lag`.
pub fn lag(config: Config, json: bool) -> anyhow::Result<()> {
    let report = runtime()?.block_on(async {
        let client = operator_connection(&config).await?;
        let kafka = broker::connect(&config.kafka).await?;
        lag::report(&client, &kafka, &config.kafka, crate::clock::now()).await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}

/// `wallet reposition --partition N`.
pub fn reposition(config: Config, partition: i32) -> anyhow::Result<()> {
    let repositioned = runtime()?.block_on(async {
        let pool = database::pool(&config.database)?;
        let client = database::client(&pool).await.map_err(|error| {
            anyhow::anyhow!(
                "cannot reach PostgreSQL at {}: {}",
                database::redact(&config.database.url),
                error.describe()
            )
        })?;
        let kafka = broker::connect(&config.kafka).await?;
        resume::reposition(&client, &kafka, &config.kafka, partition).await
    })?;
    println!("{repositioned}");
    Ok(())
}

/// `wallet token create|list|revoke`.
pub fn token(config: Config, command: TokenCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = database::connect(&config.database).await.with_context(|| {
            format!(
                "cannot reach PostgreSQL at {}",
                database::redact(&config.database.url)
            )
        })?;
        match command {
            TokenCommand::Create {
                tenant,
                scopes,
                name,
            } => {
                let scopes = scopes
                    .iter()
                    .map(|scope| {
                        Scope::parse(scope.trim()).ok_or_else(|| {
                            anyhow::anyhow!("unknown scope `{scope}`: use read and/or write")
                        })
                    })
                    .collect::<anyhow::Result<Vec<Scope>>>()?;
                let token = auth::create(&client, &tenant, &scopes, &name).await?;
                eprintln!(
                    "token {} for tenant {tenant}; it is shown only now, keep it secret:",
                    token.id
                );
                println!("{}", token.secret);
            }
            TokenCommand::List => {
                println!(
                    "{:<36}  {:<16}  {:<10}  {:<20}  {:<10}  NAME",
                    "ID", "TENANT", "SCOPES", "CREATED", "STATE"
                );
                for token in auth::list(&client).await? {
                    let scopes: Vec<&str> =
                        token.scopes.iter().map(|scope| scope.as_str()).collect();
                    let state = match token.revoked_at {
                        Some(_) => "revoked",
                        None => "live",
                    };
                    println!(
                        "{:<36}  {:<16}  {:<10}  {:<20}  {:<10}  {}",
                        token.id,
                        token.tenant,
                        scopes.join(","),
                        token.created_at.format("%Y-%m-%d %H:%M:%S"),
                        state,
                        token.name
                    );
                }
            }
            TokenCommand::Revoke { id } => {
                if !auth::revoke(&client, id).await? {
                    anyhow::bail!("no live token has id {id}");
                }
                println!("revoked {id}");
            }
        }
        Ok(())
    })
}

async fn connect_stores(config: &Config) -> anyhow::Result<(deadpool_postgres::Pool, Cache)> {
    connect(config, database::pool(&config.database)?).await
}

async fn connect_worker_stores(
    config: &Config,
) -> anyhow::Result<(deadpool_postgres::Pool, Cache)> {
    let pool = database::worker_pool(&config.database, config.worker.lease_lapse())?;
    connect(config, pool).await
}

async fn connect(
    config: &Config,
    pool: deadpool_postgres::Pool,
) -> anyhow::Result<(deadpool_postgres::Pool, Cache)> {
    await_database(config, &pool).await.with_context(|| {
        format!(
            "cannot reach PostgreSQL at {}",
            database::redact(&config.database.url)
        )
    })?;
    let client = database::client(&pool)
        .await
        .map_err(|error| anyhow::anyhow!(error.describe()))?;
    schema::refuse_newer(&client).await?;
    let cache = Cache::new(&config.redis)?;
    if let Err(error) = cache.ping().await {
        tracing::warn!(%error, "Redis is unavailable; reads fall back to PostgreSQL");
    }
    Ok((pool, cache))
}

/// Waits up to `STARTUP_WAIT` for PostgreSQL: a process started while it restarts (or before
/// it) comes up with it instead of exiting, and a wrong URL still fails within that bound.
async fn await_database(config: &Config, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut failures = 0;
    loop {
        match database::check(pool, config.database.connect_timeout() * 2).await {
            Ok(()) => return Ok(()),
            Err(error) if started.elapsed() < STARTUP_WAIT => {
                failures += 1;
                tracing::warn!(error = %format!("{error:#}"), "PostgreSQL is not reachable yet; retrying");
                let step = Duration::from_millis(100);
                tokio::time::sleep(backoff(failures, step, Duration::from_secs(2))).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// `worker` is the health of the worker running in the same process, if any.
async fn build_api(
    config: &Config,
    pool: deadpool_postgres::Pool,
    cache: Cache,
    worker: Option<WorkerHealth>,
) -> anyhow::Result<Application> {
    let producer = OperationProducer::connect(&config.kafka, &pool).await?;
    let tokens = Arc::new(TokenRegistry::new(&config.auth)?);
    if tokens.enabled() {
        let count = tokens
            .reload(&pool)
            .await
            .context("loading the API tokens (run `wallet migrate` first)")?;
        tracing::info!(tokens = count, "API tokens loaded");
        let refreshed = tokens.clone();
        let interval = Duration::from_millis(config.auth.refresh_interval_ms);
        let pool = pool.clone();
        tokio::spawn(async move { refreshed.refresh(pool, interval).await });
    } else {
        tracing::warn!(
            "authentication is OFF (auth.enabled = false): anyone who reaches the port may \
             read and move money, as tenant `default`"
        );
    }
    let state = AppState {
        pool,
        directory: Arc::new(WalletDirectory::new(config.http.known_wallets_max)),
        decisions: Decisions::start(cache.clone()),
        prefer_wait_max_s: config.http.prefer_wait_max_s,
        batch_operations_max: config.http.batch_operations_max,
        cache,
        producer: Arc::new(producer),
        history_limit_max: config.http.history_limit_max,
        history_scan_max: config.http.history_scan_max,
        metadata_limits: MetadataLimits {
            keys_max: config.http.metadata_keys_max,
            key_chars_max: config.http.metadata_key_chars_max,
            value_chars_max: config.http.metadata_value_chars_max,
        },
        hold_expiry: HoldExpiry {
            default: seconds(config.http.hold_expiry_default_s),
            max: seconds(config.http.hold_expiry_max_s),
        },
        readiness_timeout: Duration::from_millis(config.http.readiness_timeout_ms),
        lease_lapse: config.worker.lease_lapse(),
        tokens,
        public: config.auth.public.clone(),
        worker,
    };
    Application::build(&config.http, state)
}

/// A configured number of seconds as a span of time; the checks bound it far below where
/// the conversion could fail.
fn seconds(value: u64) -> chrono::Duration {
    chrono::Duration::from_std(Duration::from_secs(value)).unwrap_or(chrono::Duration::MAX)
}

/// Waits for the worker; once shutdown is requested it has `deadline` to stop. A batch still
/// uncommitted then is rolled back by PostgreSQL when the process exits, and the partition
/// leases go with the lease connection.
async fn stop_within(
    mut worker: tokio::task::JoinHandle<anyhow::Result<()>>,
    shutdown: &CancellationToken,
    deadline: Duration,
) -> anyhow::Result<()> {
    tokio::select! {
        finished = &mut worker => return finished.context("worker task")?,
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(deadline, worker).await {
        Ok(finished) => finished.context("worker task")?,
        Err(_) => {
            tracing::warn!(?deadline, "the worker did not stop in time; exiting anyway");
            Ok(())
        }
    }
}

/// Stops the server gracefully once `signal` fires, ending the waits of `Prefer: wait` first
/// so each is answered before the shutdown deadline.
fn drain_on(signal: CancellationToken, application: &Application) {
    let handle = application.server.handle();
    let decisions = application.decisions.clone();
    tokio::spawn(async move {
        signal.cancelled().await;
        decisions.drain();
        handle.stop(true).await;
    });
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}
