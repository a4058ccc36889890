# One resource that always fails, so that failed_resources > 0 in the last run summary.
exec { 'always-fails':
  command => '/bin/false',
}

file { "${facts['vsop_node_dir']}/failing-ran.txt":
  ensure  => file,
  content => "this run had a failing resource\n",
}
