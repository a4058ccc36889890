# Records every run with its start and end, so tests can count runs and see that none overlap.
$log = "${facts['vsop_node_dir']}/runs.log"

exec { 'run-start':
  command => "/bin/sh -c 'echo start $(date +%s.%N) >> ${log}; sleep 2; echo end $(date +%s.%N) >> ${log}'",
}
