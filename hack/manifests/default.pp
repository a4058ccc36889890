# The default manifest of a simulated node (hack/node-up.sh): one file in the node's directory.
file { "${facts['vsop_node_dir']}/vsop-managed.txt":
  ensure  => file,
  content => "managed by Puppet on ${facts['fqdn']}\n",
}
