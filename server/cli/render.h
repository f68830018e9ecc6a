// cli/render.h — how `kiln` prints each API resource for humans: table rows and detail views
// of proto's typed resources (Machine, Deployment, ImageVersion, Token, Event).
//
// Pure functions of the decoded values: times print as the server's RFC 3339 text
// (format_rfc3339_ms), absent values as "" (which a Table or Details shows as "-"), version
// references as "image:version".
#pragma once

#include <optional>
#include <ostream>
#include <string>

#include "cli/table.h"
#include "proto/resources.h"

namespace kiln::cli {

// "ubuntu:22.04"; "" for none.
std::string version_text(const std::optional<proto::VersionRef>& v);

// --- machines ---
Table machine_table();
void add_machine_row(Table& t, const proto::Machine& m);
void print_machine(std::ostream& out, const proto::Machine& m);

// --- deployments ---
void print_deployment(std::ostream& out, const proto::Deployment& d);
// A machine's deployment history.
Table deployment_table();
void add_deployment_row(Table& t, const proto::Deployment& d);
// The outcome of an assignment or rollback: `created` is false when the same version was
// already being deployed (HTTP 200: nothing changed); `superseded_id` is the deployment the
// new one replaced ("" for none).
void print_assignment(std::ostream& out, const proto::Deployment& d, bool created,
                      const std::string& superseded_id);
// The per-machine outcomes of a bulk assignment.
Table bulk_assignment_table();
void add_bulk_assignment_row(Table& t, const proto::Deployment& d, bool created,
                             const std::string& superseded_id);

// --- image versions ---
Table image_table();
void add_image_row(Table& t, const proto::ImageVersion& v);
void print_image(std::ostream& out, const proto::ImageVersion& v);

// --- tokens ---
Table token_table();
void add_token_row(Table& t, const proto::Token& tok);

// --- events ---
// "<time> <id> <type> machine=<id> deployment=<id> <data>" (absent parts left out).
std::string event_line(const proto::Event& e);

}  // namespace kiln::cli
