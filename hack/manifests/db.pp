# A database server: its configuration file, under the node's directory.
file { "${facts['vsop_node_dir']}/db.conf":
  ensure  => file,
  content => "listen_addresses = '*'\nmax_connections = 100\n",
}
