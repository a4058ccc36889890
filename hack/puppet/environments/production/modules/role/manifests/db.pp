# A database server: its configuration file.
class role::db {
  include role
  file { "${facts['vsop_node_dir']}/db.conf":
    ensure  => file,
    content => "listen_addresses = '*'\nmax_connections = 100\n",
  }
}
