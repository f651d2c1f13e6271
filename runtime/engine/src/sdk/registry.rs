//! What an [`Engine`] keeps besides executions, for its tenant: installed
//! plugins and registered workflows, and checking workflow text.

use orchestrator_core::plugin::Grants;
use orchestrator_store::plugins::PluginRecord;
use orchestrator_store::workflows::StoredWorkflow;

use super::engine::{Engine, blocking};
use crate::plugin::{self, InstallReport, InstallRequest, Removed};
use crate::service::{self, ServiceError};
use crate::workflows::{self, Registered};

/// A component to install, and how.
#[derive(Debug, Clone, Default)]
pub struct Install {
    /// The component's bytes.
    pub bytes: Vec<u8>,
    /// Where they came from, for messages.
    pub source: String,
    /// The name to install under (default: the one `describe()` gives).
    pub name: Option<String>,
    /// The version (default: the one `describe()` gives).
    pub version: Option<String>,
    /// What it is granted.
    pub grants: Grants,
}

impl Engine {
    /// Validates, precompiles and installs a plugin for this tenant, within
    /// its `quotas:`.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::sdk::Install;
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let bytes = std::fs::read("slugify.wasm").map_err(|e| orchestrator_engine::service::ServiceError::Plugin(e.to_string()))?;
    /// let report = engine.install(Install { bytes, source: "slugify.wasm".into(), ..Install::default() }).await?;
    /// println!("{}@{}", report.record.name, report.record.version);
    /// # Ok(()) }
    /// ```
    pub async fn install(&self, install: Install) -> Result<InstallReport, ServiceError> {
        let engine = self.clone();
        let quota = self.config.quotas.plugins(&self.tenant);
        // Compiling happens inside; the store is opened for the install.
        let store = blocking(move || engine.keeping.with_store(|store| Ok(store.clone()))).await;
        let store = store?;
        let request = InstallRequest {
            bytes: &install.bytes,
            source: install.source,
            name: install.name,
            version: install.version,
            grants: install.grants,
            builtin: false,
            quota,
        };
        Ok(plugin::install(&store, &self.sandbox, self.tenant.as_str(), request).await?)
    }

    /// This tenant's installed plugins.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// for plugin in engine.plugins().await? {
    ///     println!("{}@{}", plugin.name, plugin.version);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn plugins(&self) -> Result<Vec<PluginRecord>, ServiceError> {
        let engine = self.clone();
        blocking(move || {
            engine
                .keeping
                .with_store(|store| Ok(store.plugins(engine.tenant.as_str())?))
        })
        .await
    }

    /// The installed plugin `plugin` names (`name`, `name@version`,
    /// `sha256:<digest>`).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// println!("{}", engine.plugin("llm").await?.digest);
    /// # Ok(()) }
    /// ```
    pub async fn plugin(&self, plugin: &str) -> Result<PluginRecord, ServiceError> {
        let (engine, plugin) = (self.clone(), plugin.to_owned());
        blocking(move || {
            engine
                .keeping
                .with_store(|store| plugin::find(store, &engine.tenant, &plugin))
        })
        .await
    }

    /// Grants installed plugin `plugin` more.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::plugin::Grants;
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let more = Grants { http_hosts: vec!["api.example.com".into()], ..Grants::default() };
    /// engine.grant("slugify", more).await?;
    /// # Ok(()) }
    /// ```
    pub async fn grant(&self, plugin: &str, more: Grants) -> Result<InstallReport, ServiceError> {
        let engine = self.clone();
        let store = blocking(move || engine.keeping.with_store(|store| Ok(store.clone()))).await?;
        let quota = self.config.quotas.plugins(&self.tenant);
        plugin::grant(&store, &self.sandbox, &self.tenant, plugin, more, quota).await
    }

    /// Removes `plugin` (`name@version`).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let removed = engine.remove("slugify@0.1.0").await?;
    /// println!("component deleted: {}", removed.component_deleted);
    /// # Ok(()) }
    /// ```
    pub async fn remove(&self, plugin: &str) -> Result<Removed, ServiceError> {
        let (engine, plugin) = (self.clone(), plugin.to_owned());
        blocking(move || {
            engine
                .keeping
                .with_store(|store| plugin::remove(store, &engine.tenant, &plugin))
        })
        .await
    }

    /// Validates workflow text sent by a caller and registers it as the
    /// next version of its name; `label` stands for its file.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let text = "name: shout\ntasks:\n  - { id: up, uses: transform, with: { script: '\"HI\"' } }\n";
    /// let registered = engine.register(text, "shout.yaml").await?;
    /// println!("{}@{}", registered.name, registered.version);
    /// # Ok(()) }
    /// ```
    pub async fn register(&self, text: &str, label: &str) -> Result<Registered, ServiceError> {
        let (engine, text, label) = (self.clone(), text.to_owned(), label.to_owned());
        blocking(move || {
            engine.keeping.with_store(|store| {
                workflows::add_sent(store, &engine.expressions, &engine.tenant, text, &label)
            })
        })
        .await
    }

    /// Every version of every workflow this tenant registered.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// for w in engine.workflows().await? {
    ///     println!("{}@{}", w.name, w.version);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn workflows(&self) -> Result<Vec<StoredWorkflow>, ServiceError> {
        let engine = self.clone();
        blocking(move || {
            engine
                .keeping
                .with_store(|store| workflows::list(store, &engine.tenant))
        })
        .await
    }

    /// Version `version` of registered workflow `name` (`None`: its newest).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let newest = engine.workflow("shout", None).await?;
    /// let workflow = orchestrator_engine::Workflow::from_text(&newest.source, "shout")?;
    /// # let _ = workflow;
    /// # Ok(()) }
    /// ```
    pub async fn workflow(
        &self,
        name: &str,
        version: Option<u64>,
    ) -> Result<StoredWorkflow, ServiceError> {
        self.workflows()
            .await?
            .into_iter()
            .filter(|w| w.name == name && version.is_none_or(|v| w.version == v))
            .max_by_key(|w| w.version)
            .ok_or_else(|| {
                ServiceError::NotFound(match version {
                    Some(v) => format!("no workflow `{name}@{v}` is registered"),
                    None => format!("no workflow `{name}` is registered"),
                })
            })
    }

    /// Checks workflow text sent by a caller against this tenant's plugins
    /// and workflows, as `runtime validate` checks a file: its name and
    /// how many tasks it has, or every problem with its line and column.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let (name, tasks) = engine.validate("name: a\ntasks: []\n", "a.yaml").await?;
    /// # let _ = (name, tasks);
    /// # Ok(()) }
    /// ```
    pub async fn validate(&self, text: &str, label: &str) -> Result<(String, usize), ServiceError> {
        let (engine, text, label) = (self.clone(), text.to_owned(), label.to_owned());
        blocking(move || {
            engine.keeping.with_store(|store| {
                let loaded = service::load_sent_text(
                    text,
                    &label,
                    &engine.expressions,
                    store,
                    &engine.tenant,
                )?;
                Ok((loaded.plan.name.clone(), loaded.plan.tasks.len()))
            })
        })
        .await
    }
}
