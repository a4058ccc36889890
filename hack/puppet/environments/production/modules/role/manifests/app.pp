# An application server: its service configuration.
class role::app {
  include role
  file { "${facts['vsop_node_dir']}/app.properties":
    ensure  => file,
    content => "instance=${trusted['extensions']['pp_instance']}\nenvironment=${trusted['extensions']['pp_environment']}\n",
  }
}
