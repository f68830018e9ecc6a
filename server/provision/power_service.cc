#include "provision/power_service.h"

#include <spdlog/spdlog.h>

#include "core/log_util.h"

namespace kiln::provision {

namespace {

using json = nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

std::int64_t ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - t0).count();
}

json step_json(const power::Step& s) {
  return {{"name", s.name},
          {"detail", s.detail},
          {"took_ms", s.took.count()},
          {"attempts", s.attempts}};
}

}  // namespace

PowerService::PowerService(PowerOptions options, BmcBook& bmcs, DriverFactory& drivers,
                           PowerLedger& ledger, const Clock& clock,
                           std::shared_ptr<spdlog::logger> log, Leadership* leadership)
    : options_(options),
      bmcs_(bmcs),
      drivers_(drivers),
      ledger_(ledger),
      clock_(clock),
      log_(std::move(log)),
      leadership_(leadership) {
  if (options_.max_concurrent < 1) options_.max_concurrent = 1;
  slots_free_ = options_.max_concurrent;
}

PowerService::~PowerService() { stop(); }

void PowerService::start() {
  for (int i = 0; i < options_.max_concurrent; ++i) workers_.emplace_back([this] { worker(); });
  deadlines_ = std::thread([this] { deadline_loop(); });
}

void PowerService::request_stop() {
  std::deque<Job> dropped;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    if (!queue_.empty()) {
      log_->warn("event=power.dropped jobs={} reason=\"kilnd is stopping\"", queue_.size());
    }
    dropped.swap(queue_);
  }
  work_cv_.notify_all();
  slot_cv_.notify_all();
  stop_cv_.notify_all();
  for (auto& j : dropped) {
    if (j.call) {
      j.call();  // an operator's call answers (the service is stopping)
    } else if (j.missed) {
      std::lock_guard lock(mu_);
      unreturned_.push_back(std::move(j));  // stop() gives its miss back
    }
  }
}

void PowerService::stop() {
  request_stop();
  for (auto& t : workers_) t.join();
  workers_.clear();
  if (deadlines_.joinable()) deadlines_.join();
  // Deadline recoveries that will not run here: their misses go back, due now, for whichever
  // instance leads next (this one after a restart).
  std::vector<Job> jobs;
  {
    std::lock_guard lock(mu_);
    jobs.swap(unreturned_);
  }
  for (const auto& j : jobs) {
    give_back(j.deployment_id, j.missed, "kilnd stopped before the power-cycle ran");
  }
}

void PowerService::give_back(std::int64_t deployment_id, std::optional<std::int64_t> missed,
                             const std::string& why) {
  if (!missed) return;
  try {
    if (auto r = ledger_.return_miss(deployment_id, *missed, why); !r) {
      log_->info("event=power.miss_not_returned deployment={} err=\"{}\"", deployment_id,
                 r.error().message);
    }
  } catch (const std::exception& e) {
    log_->warn("event=power.miss_not_returned deployment={} err=\"{}\"", deployment_id,
               log_escape(e.what(), 300));
  }
}

bool PowerService::acquire(std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  if (!slot_cv_.wait_for(lock, wait, [&] { return stopping_ || slots_free_ > 0; })) return false;
  if (stopping_) return false;
  --slots_free_;
  ++running_;
  return true;
}

void PowerService::release() {
  {
    std::lock_guard lock(mu_);
    ++slots_free_;
    --running_;
  }
  slot_cv_.notify_one();
}

int PowerService::busy() {
  std::lock_guard lock(mu_);
  return running_ + static_cast<int>(queue_.size());
}

void PowerService::note_bmc(std::int64_t machine_id, bool ok, power::PowerState state,
                            bool changed) {
  std::lock_guard lock(health_mu_);
  auto& h = health_.machines[machine_id];
  h.reachable = ok;
  if (ok) {
    ++health_.ok;
    if (state != power::PowerState::kUnknown || changed) h.state = state;
  } else {
    ++health_.failed;
    h.state = power::PowerState::kUnknown;  // no longer known
  }
}

PowerService::BmcStats PowerService::bmc_stats() {
  std::lock_guard lock(health_mu_);
  return health_;
}

// A BMC whose record cannot be used (credentials that do not open) still counts: the caller
// then gets that error, not "no BMC configured".
bool PowerService::has_bmc(std::int64_t machine_id) {
  auto b = bmcs_.bmc(machine_id);
  return b.ok() || b.error().code != Errc::kNotFound;
}

Result<std::unique_ptr<power::Driver>> PowerService::driver_for(std::int64_t machine_id,
                                                                power::BootMode* mode) {
  auto bmc = bmcs_.bmc(machine_id);
  if (!bmc) return bmc.error();
  if (mode) *mode = bmc->mode;
  return drivers_.make(bmc->config);
}

Result<PowerOutcome> PowerService::with_slot(std::int64_t machine_id,
                                             const std::function<Result<PowerOutcome>()>& fn) {
  if (!has_bmc(machine_id)) {
    return make_error(Errc::kNotFound,
                      "machine " + std::to_string(machine_id) + " has no BMC configured");
  }
  if (!acquire(options_.slot_wait)) {
    return make_error(Errc::kUnavailable, "every BMC slot is busy (power.max_concurrent = " +
                                              std::to_string(options_.max_concurrent) +
                                              "); try again");
  }
  struct Releaser {
    PowerService* s;
    ~Releaser() { s->release(); }
  } releaser{this};
  return fn();
}

Result<PowerOutcome> PowerService::status(std::int64_t machine_id, const std::string& who) {
  return with_slot(machine_id, [&] { return do_status(machine_id, who); });
}

Result<PowerOutcome> PowerService::do_status(std::int64_t machine_id, const std::string& who) {
  const auto t0 = SteadyClock::now();
  auto drv = driver_for(machine_id, nullptr);
  if (!drv) return drv.error();
  auto st = (*drv)->status();
  note_bmc(machine_id, st.ok(), st ? *st : power::PowerState::kUnknown);
  if (!st) {
    ledger_.record("power.failed", machine_id, std::nullopt,
                   {{"action", "status"},
                    {"error", st.error().message},
                    {"by", who},
                    {"took_ms", ms_since(t0)}});
    return st.error();
  }
  PowerOutcome out;
  out.state = *st;
  out.took = std::chrono::milliseconds(ms_since(t0));
  return out;
}

Result<PowerOutcome> PowerService::power(std::int64_t machine_id, power::PowerAction action,
                                         const std::string& who) {
  return with_slot(machine_id, [&] { return do_power(machine_id, action, who); });
}

void PowerService::power_async(std::int64_t machine_id, std::optional<power::PowerAction> action,
                               const std::string& who, Done done) {
  if (!has_bmc(machine_id)) {
    return done(make_error(Errc::kNotFound,
                           "machine " + std::to_string(machine_id) + " has no BMC configured"));
  }
  auto shared = std::make_shared<Done>(std::move(done));
  Job job;
  job.machine_id = machine_id;
  job.call = [this, machine_id, action, who, shared] {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping) return (*shared)(make_error(Errc::kUnavailable, "kilnd is stopping"));
    Result<PowerOutcome> r = make_error(Errc::kInternal, "internal error");
    try {
      r = action ? do_power(machine_id, *action, who) : do_status(machine_id, who);
    } catch (const std::exception& e) {  // (a storage failure recording the event) the caller
      log_->error("event=power.error machine={} err=\"{}\"", machine_id,  // still gets an answer
                  log_escape(e.what(), 300));
    }
    (*shared)(std::move(r));
  };
  bool queued = false;
  {
    std::lock_guard lock(mu_);
    if (!stopping_) {
      queue_.push_front(std::move(job));  // an operator's call goes before queued reimages
      queued = true;
    }
  }
  if (!queued) return (*shared)(make_error(Errc::kUnavailable, "kilnd is stopping"));
  work_cv_.notify_one();
}

Result<PowerOutcome> PowerService::do_power(std::int64_t machine_id, power::PowerAction action,
                                            const std::string& who) {
  const auto t0 = SteadyClock::now();
  const char* name = power::power_action_name(action);
  auto fail = [&](const Error& e) {
    note_bmc(machine_id, false, power::PowerState::kUnknown);
    ledger_.record(
        "power.failed", machine_id, std::nullopt,
        {{"action", name}, {"error", e.message}, {"by", who}, {"took_ms", ms_since(t0)}});
    log_->warn("event=power.failed machine={} action={} err=\"{}\"", machine_id, name,
               log_escape(e.message, 300));
    return e;
  };
  auto drv = driver_for(machine_id, nullptr);
  if (!drv) return fail(drv.error());
  auto steps = (*drv)->power(action);
  if (!steps) return fail(steps.error());
  PowerOutcome out;
  out.steps = std::move(*steps);
  auto st = (*drv)->status();
  out.state = st ? *st : power::PowerState::kUnknown;
  // The action went through; if the read-back failed, the state before it is no longer known.
  note_bmc(machine_id, true, out.state, /*changed=*/true);
  out.took = std::chrono::milliseconds(ms_since(t0));
  json js = json::array();
  for (const auto& s : out.steps) js.push_back(step_json(s));
  ledger_.record("power.action", machine_id, std::nullopt,
                 {{"action", name},
                  {"steps", js},
                  {"state", power::power_state_name(out.state)},
                  {"by", who},
                  {"took_ms", out.took.count()}});
  log_->info("event=power.action machine={} action={} state={} took_ms={} by={}", machine_id, name,
             power::power_state_name(out.state), out.took.count(), who);
  return out;
}

Status PowerService::reimage(std::int64_t machine_id, std::int64_t deployment_id,
                             const std::string& why, Origin origin) {
  if (!has_bmc(machine_id)) {
    return make_error(Errc::kNotFound,
                      "machine " + std::to_string(machine_id) + " has no BMC configured");
  }
  return enqueue(machine_id, deployment_id, why, /*network=*/true, origin);
}

Status PowerService::enqueue(std::int64_t machine_id, std::int64_t deployment_id,
                             const std::string& why, bool network, Origin origin,
                             std::optional<std::int64_t> missed) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return make_error(Errc::kUnavailable, "kilnd is stopping");
    for (auto& j : queue_) {
      if (!j.call && j.machine_id == machine_id) {  // one pending sequence per machine
        j.deployment_id = deployment_id;
        j.why = why;
        j.network = network;
        j.origin = origin;
        j.missed = missed;
        return Unit{};
      }
    }
    if (queue_.size() >= options_.max_queued) {
      return make_error(Errc::kUnavailable, "too many BMC operations queued");
    }
    Job job;
    job.machine_id = machine_id;
    job.deployment_id = deployment_id;
    job.why = why;
    job.network = network;
    job.origin = origin;
    job.missed = missed;
    queue_.push_back(std::move(job));
  }
  work_cv_.notify_one();
  return Unit{};
}

void PowerService::worker() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!acquire(std::chrono::hours(24))) {  // only when stopping
      std::lock_guard lock(mu_);
      if (job.missed) unreturned_.push_back(std::move(job));
      return;
    }
    try {
      if (job.call) {
        job.call();
      } else {
        run_reimage(job.machine_id, job.deployment_id, job.why, job.network, job.origin,
                    job.missed);
      }
    } catch (const std::exception& e) {
      log_->error("event=power.error machine={} deployment={} err=\"{}\"", job.machine_id,
                  job.deployment_id, log_escape(e.what(), 300));
    }
    release();
  }
}

bool PowerService::may_act(Origin origin) {
  return origin == Origin::kOperator || leadership_ == nullptr || leadership_->held();
}

void PowerService::run_reimage(std::int64_t machine_id, std::int64_t deployment_id,
                               const std::string& why, bool network, Origin origin,
                               std::optional<std::int64_t> missed) {
  const auto t0 = SteadyClock::now();
  const char* action = network ? "reimage" : "reboot";
  json steps = json::array();
  auto skip = [&](const std::string& reason) {
    ledger_.record("power.skipped", machine_id, deployment_id,
                   {{"action", action}, {"reason", reason}, {"why", why}});
    log_->info("event=power.skipped machine={} deployment={} reason=\"{}\"", machine_id,
               deployment_id, reason);
  };
  // The leadership moved while the job waited: its new holder powers this deployment (a
  // rollout's unpowered deployments; a deadline's recovery, whose counted miss is given back
  // with the deadline due now), so acting here too would power-cycle the machine twice.
  constexpr const char* kNotLeader = "another kilnd took the engine's leadership over";
  auto hand_over = [&] {
    skip(kNotLeader);
    give_back(deployment_id, missed, kNotLeader);
  };
  if (!may_act(origin)) return hand_over();
  auto fail = [&](const std::string& step, const Error& e) {
    note_bmc(machine_id, false, power::PowerState::kUnknown);
    ledger_.record("power.failed", machine_id, deployment_id,
                   {{"action", action},
                    {"step", step},
                    {"error", e.message},
                    {"steps", steps},
                    {"why", why},
                    {"took_ms", ms_since(t0)}});
    // The machine was not powered: the write stage's deadline still runs (from now), so the
    // deadline thread retries the reimage instead of leaving the deployment pending forever.
    if (auto deadline = written_deadline(clock_.now_ms()); network && deadline) {
      (void)ledger_.watch(deployment_id, *deadline);
    }
    log_->warn("event=power.failed machine={} deployment={} action={} step={} err=\"{}\"",
               machine_id, deployment_id, action, step, log_escape(e.message, 300));
  };
  auto step_done = [&](const power::Step& s) {
    steps.push_back(step_json(s));
    ledger_.record("power.step", machine_id, deployment_id,
                   {{"action", action},
                    {"step", s.name},
                    {"detail", s.detail},
                    {"took_ms", s.took.count()},
                    {"attempts", s.attempts},
                    {"ok", true}});
  };
  power::BootMode mode = power::BootMode::kUefi;
  auto drv = driver_for(machine_id, &mode);
  if (!drv) return fail("bmc", drv.error());
  const auto s0 = SteadyClock::now();
  auto st = (*drv)->status();
  if (!st) return fail("status", st.error());
  note_bmc(machine_id, true, *st);
  step_done(power::Step{"status", power::power_state_name(*st),
                        std::chrono::milliseconds(ms_since(s0)), 1});
  // A job may have waited long in the queue: act only if its deployment still wants it (not
  // superseded, not confirmed meanwhile).
  if (auto cur = ledger_.deployment(deployment_id); cur) {
    const bool wanted = network ? proto::is_active(cur->status)
                                : cur->status == proto::DeploymentStatus::kSucceeded &&
                                      cur->deadline_at.has_value();
    if (!wanted) return skip(std::string("deployment is ") + proto::to_string(cur->status));
  }
  if (network) {
    auto boot = (*drv)->boot_once_network(mode);
    if (!boot) return fail("boot_once_network", boot.error());
    for (const auto& s : *boot) step_done(s);
  }
  const auto act =
      *st == power::PowerState::kOff ? power::PowerAction::kOn : power::PowerAction::kCycle;
  // Asked again at the last moment: the BMC calls above take seconds. (The one-time network
  // boot already set is harmless: the new leader's reimage sets it again before powering.)
  if (!may_act(origin)) return hand_over();
  auto p = (*drv)->power(act);
  if (!p) return fail(power::power_action_name(act), p.error());
  note_bmc(machine_id, true, power::PowerState::kOn);  // powered on or cycled
  for (const auto& s : *p) step_done(s);
  auto marked = ledger_.mark_powered(deployment_id,
                                     network ? written_deadline(clock_.now_ms()) : std::nullopt);
  ledger_.record("power.reimage", machine_id, deployment_id,
                 {{"action", action},
                  {"boot", network ? "network" : "disk"},
                  {"steps", steps},
                  {"why", why},
                  {"took_ms", ms_since(t0)}});
  log_->info("event=power.{} machine={} deployment={} boot={} took_ms={}{}", action, machine_id,
             deployment_id, network ? "network" : "disk", ms_since(t0),
             marked ? "" : " note=\"the deployment moved on meanwhile\"");
}

std::optional<std::int64_t> PowerService::written_deadline(std::int64_t from_ms) const {
  if (options_.written_deadline.count() <= 0) return std::nullopt;
  return from_ms +
         std::chrono::duration_cast<std::chrono::milliseconds>(options_.written_deadline).count();
}

std::optional<std::int64_t> PowerService::booted_deadline(std::int64_t written_ms) const {
  if (options_.booted_deadline.count() <= 0) return std::nullopt;
  return written_ms +
         std::chrono::duration_cast<std::chrono::milliseconds>(options_.booted_deadline).count();
}

int PowerService::check_deadlines() {
  if (leadership_ != nullptr && !leadership_->held()) return 0;
  auto due = ledger_.overdue(clock_.now_ms(), 200);
  for (const auto& d : due) overdue(d);
  return static_cast<int>(due.size());
}

void PowerService::overdue(const proto::Deployment& d) {
  if (!d.deadline_at) return;
  const bool written = d.status == proto::DeploymentStatus::kSucceeded;
  const auto stage = written ? options_.booted_deadline : options_.written_deadline;
  // A deadline set under an earlier configuration still gets a sensible next one.
  const auto stage_ms = stage.count() > 0
                            ? std::chrono::duration_cast<std::chrono::milliseconds>(stage).count()
                            : std::int64_t{60'000};
  const std::string what = written ? "the deployed OS did not confirm its boot by its deadline"
                                   : "the image was not written by its deadline";
  const bool bmc = has_bmc(d.machine_id);
  if (bmc && d.deadline_misses < options_.deadline_retries) {
    const std::string why = what + "; power-cycling (retry " +
                            std::to_string(d.deadline_misses + 1) + " of " +
                            std::to_string(options_.deadline_retries) + ")";
    auto r = ledger_.miss_deadline(d.id, *d.deadline_at, clock_.now_ms() + stage_ms, why);
    if (!r) return;  // it moved on meanwhile
    log_->warn("event=deployment.deadline_missed deployment={} machine={} stage={} misses={}", d.id,
               d.machine_id, written ? "booted" : "written", r->deadline_misses);
    if (auto q =
            enqueue(d.machine_id, d.id, why, /*network=*/!written, Origin::kEngine, r->deadline_at);
        !q) {
      // Not queued (full, or stopping): the miss goes back, due now.
      give_back(d.id, r->deadline_at, "the power-cycle could not be queued: " + q.error().message);
    }
    return;
  }
  const std::string why =
      what + (bmc ? " after " + std::to_string(d.deadline_misses) + " power-cycle(s)"
                  : " (the machine has no BMC to power-cycle it)");
  auto f = ledger_.fail_overdue(d.id, *d.deadline_at, why);
  if (!f) return;
  log_->warn("event=deployment.failed deployment={} machine={} reason=\"{}\"", d.id, d.machine_id,
             why);
  if (!options_.auto_rollback) return;
  // kilnd never rolls back its own rollback: a machine that fails that too needs a person
  // (else two versions that once booted could take turns forever, each a disk rewrite).
  if (d.requested_by == "kilnd:auto-rollback") {
    ledger_.record("deployment.auto_rollback_failed", d.machine_id, d.id,
                   {{"reason", "the automatic rollback itself failed; not rolling back again"}});
    log_->warn("event=deployment.auto_rollback_failed machine={} reason=\"the rollback failed\"",
               d.machine_id);
    return;
  }
  auto rb = ledger_.rollback_to_booted(d.machine_id, "kilnd:auto-rollback",
                                       written_deadline(clock_.now_ms()));
  if (!rb) {
    ledger_.record("deployment.auto_rollback_failed", d.machine_id, d.id,
                   {{"reason", rb.error().message}});
    log_->warn("event=deployment.auto_rollback_failed machine={} err=\"{}\"", d.machine_id,
               log_escape(rb.error().message, 300));
    return;
  }
  log_->info("event=deployment.auto_rollback machine={} deployment={} to={}:{}", d.machine_id,
             rb->id, rb->to_version.name, rb->to_version.version);
  if (bmc) {
    auto q = reimage(d.machine_id, rb->id,
                     "automatic rollback after deployment " + std::to_string(d.id) + " failed",
                     Origin::kEngine);
    if (!q) {
      log_->warn("event=power.failed machine={} err=\"{}\"", d.machine_id, q.error().message);
    }
  }
}

void PowerService::deadline_loop() {
  for (bool first = true;; first = false) {
    {
      std::unique_lock lock(mu_);
      const auto wait = first ? std::max(options_.tick, options_.startup_grace) : options_.tick;
      if (stop_cv_.wait_for(lock, wait, [&] { return stopping_; })) return;
    }
    try {
      check_deadlines();
    } catch (const std::exception& e) {
      log_->error("event=deadlines.error err=\"{}\"", log_escape(e.what(), 300));
    }
  }
}

}  // namespace kiln::provision
