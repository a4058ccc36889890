# vsop's node-side MCollective puppet agent. Action names and reply fields follow the widely
# used MCollective puppet agent, so the stock `mco rpc puppet ...` client works against it.
#
# server.cfg settings (all optional):
#   plugin.puppet.command          command of one run (default: puppet agent --onetime --no-daemonize)
#   plugin.puppet.lastrunfile      summary YAML (default: `puppet config print lastrunfile`)
#   plugin.puppet.lastrunreport    the last run's report, read for the failed resources' names
#                                  (default: last_run_report.yaml in the run lock's directory,
#                                  Puppet's statedir)
#   plugin.puppet.lockfile         run lock (default: `puppet config print agent_catalog_run_lockfile`)
#   plugin.puppet.disable_lockfile disable lock (default: `puppet config print agent_disabled_lockfile`)
#   plugin.puppet.pidfile          pid of the run this agent started (default: next to lockfile)
#   plugin.puppet.run_log          where the run's output goes (default: /dev/null)
#   plugin.vsop.identity_key       this server's own key from vsop (default:
#                                  /etc/mcollective/vsop/identity.pem); when readable, every reply
#                                  also carries vsop_signed + vsop_signature (see below)
require "base64"
require "fileutils"
require "json"
require "openssl"
require "shellwords"
require "yaml"

module MCollective
  module Agent
    class Puppet < RPC::Agent
      # Requests run in threads; checking for a run and starting one must not interleave.
      RUN_MUTEX = Mutex.new

      action "runonce" do
        RUN_MUTEX.synchronize do
          reply.fail!("Puppet is disabled: #{disable_message}") if disabled?
          reply.fail!("Puppet is currently applying a catalog, cannot run now") if applying?

          command = run_command
          pid = spawn_run(command)
          reply[:summary] = "Started a Puppet run using '#{command}' (pid #{pid})"
          reply[:initiated_at] = Time.now.to_i
        end
      end

      action "status" do
        applying = applying?
        enabled = !disabled?
        lastrun = last_run_time
        reply[:applying] = applying
        reply[:enabled] = enabled
        reply[:daemon_present] = false
        reply[:idling] = false
        reply[:lastrun] = lastrun
        reply[:since_lastrun] = lastrun > 0 ? Time.now.to_i - lastrun : "Unknown"
        reply[:disable_message] = enabled ? "" : disable_message
        reply[:status] = if applying then "applying"
                         elsif !enabled then "disabled"
                         else "stopped"
                         end
        reply[:message] = status_message(reply[:status], lastrun)
      end

      action "last_run_summary" do
        summary = read_summary
        resources = summary["resources"] || {}
        times = summary["time"] || {}
        lastrun = Integer(times["last_run"] || 0)
        reply[:summary] = summary
        reply[:changed_resources] = resources.fetch("changed", -1)
        reply[:failed_resources] = resources.fetch("failed", -1)
        reply[:out_of_sync_resources] = resources.fetch("out_of_sync", -1)
        reply[:total_resources] = resources.fetch("total", 0)
        reply[:total_time] = times.fetch("total", 0)
        reply[:config_retrieval_time] = times.fetch("config_retrieval", -1)
        reply[:lastrun] = lastrun
        reply[:since_lastrun] = lastrun > 0 ? Time.now.to_i - lastrun : "Unknown"
        reply[:config_version] = (summary["version"] || {})["config"]
        # Puppet writes the summary before it sends its report to the master and exits: a run
        # still applying has not let go of the master yet.
        reply[:applying] = applying?
        # Which resources failed is only in the report; read it only for a failed run (reports
        # are large). The report's time is when that run started.
        if reply[:failed_resources].is_a?(Integer) && reply[:failed_resources] > 0
          time, failed = failed_from_report
          reply[:failed_resource_names] = failed
          reply[:report_time] = time if time
        end
      end

      action "enable" do
        if disabled?
          File.unlink(disable_lockfile)
          reply[:status] = "Enabled the Puppet agent"
        else
          reply[:status] = "Already enabled"
        end
        reply[:enabled] = true
      end

      action "disable" do
        message = request[:message] || "Disabled via MCollective by #{request.caller} at #{Time.now}"
        if disabled?
          reply[:status] = "Already disabled: #{disable_message}"
        else
          FileUtils.mkdir_p(File.dirname(disable_lockfile))
          File.write(disable_lockfile, JSON.generate("disabled_message" => message))
          reply[:status] = "Disabled the Puppet agent: #{message}"
        end
        reply[:enabled] = false
      end

      # Per-server identity. The ssl security plugin signs replies with the key pair every
      # server shares, so it cannot tell one server from another. vsop gives each server its
      # own key at install; here the reply's content is stated as JSON (request id, identity,
      # agent, action, status, data) and signed with that key, so vsop can believe "installed"
      # and Puppet results from this server only. Stock mco clients just see two more fields.
      def after_processing_hook
        key_file = @config.pluginconf["vsop.identity_key"] || "/etc/mcollective/vsop/identity.pem"
        return unless File.readable?(key_file)

        data = reply.data.reject { |k, _| k.to_s.start_with?("vsop_") }
        statement = JSON.generate(
          "requestid" => request.uniqid, "identity" => @config.identity, "agent" => "puppet",
          "action" => request.action, "statuscode" => reply.statuscode,
          "statusmsg" => reply.statusmsg, "data" => data
        )
        key = OpenSSL::PKey.read(File.read(key_file))
        reply[:vsop_signed] = statement
        reply[:vsop_signature] = Base64.strict_encode64(key.sign(OpenSSL::Digest.new("SHA256"), statement))
      rescue StandardError => e
        Log.warn("vsop identity signature failed: #{e.class}: #{e}")
      end

      private

      def setting(name, default = nil)
        value = @config.pluginconf["puppet.#{name}"]
        value.nil? || value.empty? ? default : value
      end

      # `puppet config print` takes a second or two; ask once per setting and remember.
      def puppet_setting(name)
        @puppet_settings ||= {}
        @puppet_settings[name] ||= begin
          out = `puppet config print #{Shellwords.escape(name)} 2>/dev/null`.strip
          reply.fail!("Could not determine Puppet's #{name}") if out.empty?
          out
        end
      end

      def lastrunfile
        setting("lastrunfile") || puppet_setting("lastrunfile")
      end

      def lastrunreport
        setting("lastrunreport") || File.join(File.dirname(lockfile), "last_run_report.yaml")
      end

      # The report's time and its failed resources (first 10, in the report's order), read from
      # the YAML's node tree: the report is tagged as a Ruby object that safe_load refuses, and
      # nothing in it is ever instantiated.
      def failed_from_report
        root = Psych.parse(File.read(lastrunreport))&.root
        return [nil, []] unless root.is_a?(Psych::Nodes::Mapping)
        top = yaml_pairs(root)
        time = top["time"].is_a?(Psych::Nodes::Scalar) ? top["time"].value : nil
        failed = []
        statuses = top["resource_statuses"]
        if statuses.is_a?(Psych::Nodes::Mapping)
          yaml_pairs(statuses).each do |name, status|
            next unless status.is_a?(Psych::Nodes::Mapping)
            flag = yaml_pairs(status)["failed"]
            failed << name if flag.is_a?(Psych::Nodes::Scalar) && flag.value == "true"
            break if failed.size >= 10
          end
        end
        [time, failed]
      rescue StandardError => e
        Log.warn("vsop: could not read the Puppet report #{lastrunreport}: #{e.class}: #{e}")
        [nil, []]
      end

      def yaml_pairs(mapping)
        pairs = {}
        mapping.children.each_slice(2) do |k, v|
          pairs[k.value] = v if k.is_a?(Psych::Nodes::Scalar)
        end
        pairs
      end

      def lockfile
        setting("lockfile") || puppet_setting("agent_catalog_run_lockfile")
      end

      def disable_lockfile
        setting("disable_lockfile") || puppet_setting("agent_disabled_lockfile")
      end

      def pidfile
        setting("pidfile") || File.join(File.dirname(lockfile), "mcollective_puppet_run.pid")
      end

      def run_command
        args = []
        args += ["--environment", request[:environment]] if request[:environment]
        args << "--noop" if request[:noop]
        args += ["--tags", request[:tags]] if request[:tags]
        [setting("command", "puppet agent --onetime --no-daemonize"), Shellwords.join(args)]
          .reject(&:empty?).join(" ")
      end

      # Starts the run in its own process group, detached, and records its pid so that a second
      # runonce can tell a run is still going even before Puppet writes its own lock.
      def spawn_run(command)
        FileUtils.mkdir_p(File.dirname(pidfile))
        log = setting("run_log", File::NULL)
        pid = Process.spawn(command, :in => File::NULL, [:out, :err] => [log, "a"],
                                     :pgroup => true, :chdir => "/")
        waiter = Process.detach(pid)
        File.write(pidfile, pid.to_s)
        # One line when the run starts and one when it ends, in mcollectived's log with its
        # timestamps: how long runs take and how many overlap, from the node's own view.
        Log.info(format("vsop puppet run started: pid %d at %.3f", pid, Time.now.to_f))
        Thread.new do
          status = waiter.value
          Log.info(format("vsop puppet run ended: pid %d at %.3f exit %s", pid, Time.now.to_f,
                          status.exitstatus.inspect))
        end
        pid
      end

      def applying?
        return true if File.exist?(lockfile) && lock_holder_alive?(lockfile)
        File.exist?(pidfile) && pid_alive?(File.read(pidfile).strip)
      end

      # Puppet's run lock holds the pid of the run; a lock without a pid counts as held.
      def lock_holder_alive?(file)
        content = File.read(file).strip
        content =~ /\A\d+\z/ ? pid_alive?(content) : true
      rescue Errno::ENOENT
        false
      end

      def pid_alive?(pid)
        return false unless pid =~ /\A\d+\z/
        Process.kill(0, Integer(pid))
        true
      rescue Errno::ESRCH
        false
      rescue Errno::EPERM
        true
      end

      def disabled?
        File.exist?(disable_lockfile)
      end

      def disable_message
        JSON.parse(File.read(disable_lockfile))["disabled_message"] || ""
      rescue StandardError
        ""
      end

      def read_summary
        return {} unless File.exist?(lastrunfile)
        summary = YAML.safe_load(File.read(lastrunfile))
        summary.is_a?(Hash) ? summary : {}
      rescue StandardError => e
        reply.fail!("Could not read #{lastrunfile}: #{e}")
      end

      def last_run_time
        Integer((read_summary["time"] || {})["last_run"] || 0)
      end

      def status_message(status, lastrun)
        since = lastrun > 0 ? "last completed run #{Time.now.to_i - lastrun} seconds ago" : "no run yet"
        case status
        when "applying" then "Currently applying a catalog; #{since}"
        when "disabled" then "Currently disabled: #{disable_message}; #{since}"
        else "Currently stopped; #{since}"
        end
      end
    end
  end
end
